//! `forewarn-sim`: the fleet simulator's command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use forewarn::config::positive_scale;
use forewarn::loadgen::{LoadSpec, publish};
use forewarn::shutdown::{Shutdown, os_signal};
use forewarn_sim::degradation::DAY_MICROS;
use forewarn_sim::sim::{Artefacts, Fleet, SimConfig};

#[derive(Parser)]
#[command(name = "forewarn-sim", version, about = "Fleet simulator for forewarn")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct FleetArgs {
    /// Devices in the fleet.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Seed: the same seed gives the same fleet, readings and failures.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sampling interval.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    interval: Duration,
    /// Where to write the ground truth (JSON lines).
    #[arg(long)]
    truth: Option<PathBuf>,
    /// No missing samples, outliers, offline periods, skew, duplicates or reordering.
    #[arg(long)]
    clean: bool,
    /// Share of telemetry messages sent malformed (live mode).
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
    /// Multiplies the rate at which healthy devices raise warning codes anyway (see the
    /// README's table); 0 turns nuisance codes off. `--clean` leaves them on.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative_scale)]
    nuisance_scale: f64,
    /// Multiplies every failure mode's rate of degradation onsets (4: four times the
    /// failures), for small fleets whose natural rate leaves too few failures to learn
    /// from; 1 is the fleet as documented.
    #[arg(long, default_value_t = 1.0, value_parser = positive_scale)]
    failure_scale: f64,
}

/// A finite scale ≥ 0.
fn non_negative_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(scale) if scale.is_finite() && scale >= 0.0 => Ok(scale),
        _ => Err(format!("{text:?} is not a finite number ≥ 0")),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Write D days of history for the fleet straight into DATABASE_URL.
    History {
        #[command(flatten)]
        fleet: FleetArgs,
        #[arg(long, default_value_t = 180)]
        days: u32,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Concurrent COPY connections.
        #[arg(long, default_value_t = 2)]
        connections: usize,
    },
    /// Publish the fleet over MQTT from `--sim-days` ago up to now at `--speed`.
    Live {
        #[command(flatten)]
        fleet: FleetArgs,
        #[arg(long, env = "MQTT_URL", default_value = "mqtt://127.0.0.1:1883")]
        mqtt_url: String,
        /// Simulated seconds per second (3600: an hour a second).
        #[arg(long, default_value_t = 3600.0)]
        speed: f64,
        #[arg(long, default_value_t = 7)]
        sim_days: u32,
        /// Register customers, devices and technicians here first (kinds, models, owners).
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, default_value = "devices")]
        topic_prefix: String,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Once caught up with now, keep publishing in real time until stopped (SIGINT or
        /// SIGTERM) instead of exiting.
        #[arg(long)]
        follow: bool,
        /// Close the loop through forewarn's API here (`http://127.0.0.1:8080`):
        /// technicians visit what it books and record what they found.
        #[arg(long, env = "FOREWARN_API_URL", requires = "api_key")]
        api_url: Option<String>,
        /// An API key that may read and move tickets (`forewarn keys create --role
        /// integration`).
        #[arg(long, env = "FOREWARN_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// forewarn's `outreach.inbound_secret`: customers reply by SMS, signed with it.
        #[arg(long, env = "FOREWARN_INBOUND_SECRET", hide_env_values = true)]
        inbound_secret: Option<String>,
        /// Serve the customers' phones here: point forewarn's `outreach.sms_url`,
        /// `push_url` and `webhook_url` at `http://<address>/<channel>`.
        #[arg(long, requires = "api_url")]
        gateway: Option<std::net::SocketAddr>,
    },
    /// Publish synthetic telemetry as fast as the broker takes it (or at `--rate`).
    Load {
        #[arg(long, env = "MQTT_URL", default_value = "mqtt://127.0.0.1:1883")]
        mqtt_url: String,
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        #[arg(long, default_value_t = 3)]
        metrics_per_message: usize,
        /// Total messages; unlimited when absent.
        #[arg(long)]
        messages: Option<u64>,
        /// Messages per second over all connections.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value = "devices")]
        topic_prefix: String,
    },
    /// Score flags (tickets, alerts: JSON lines of {device, component, time}) against truth.
    Score {
        #[arg(long)]
        truth: PathBuf,
        #[arg(long, alias = "tickets")]
        flags: PathBuf,
        /// A flag counts for a failure at most this long before it. Default: each failure
        /// mode's horizon from the model (`--model`), else from forewarn's configuration
        /// (`train.failure_modes`, else `train.default_horizon`), as `forewarn evaluate`
        /// judges.
        #[arg(long, value_parser = humantime::parse_duration)]
        lookahead: Option<Duration>,
        /// The model the flags came from (`models/<version>/model.json`): its modes'
        /// horizons, learned or configured, judge them.
        #[arg(long)]
        model: Option<PathBuf>,
        /// forewarn's configuration file for the horizons (default `forewarn.toml` when
        /// present, or `FOREWARN_CONFIG`; environment overrides apply).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Judge only failures and flags at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// Judge only failures and flags before this time (RFC 3339); a flag whose horizon
        /// runs past it is reported as unjudged.
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// Device-days observed, for false alarms per 1,000 device-days.
        #[arg(long, default_value_t = 0.0)]
        device_days: f64,
    },
}

fn fleet_config(args: &FleetArgs, start: i64, end: i64) -> SimConfig {
    let mut artefacts = if args.clean {
        Artefacts::none()
    } else {
        Artefacts::default()
    };
    artefacts.malformed_rate = args.malformed_rate;
    SimConfig {
        seed: args.seed,
        devices: args.devices,
        start,
        end,
        interval: args.interval.as_micros() as i64,
        artefacts,
        nuisance_scale: args.nuisance_scale,
        failure_scale: args.failure_scale,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        os_signal().await;
        trigger.trigger();
    });
    let now = chrono::Utc::now().timestamp_micros();
    match Cli::parse().command {
        Command::History {
            fleet: args,
            days,
            database_url,
            connections,
        } => {
            // Whole hours, ending an hour ago, so the window is fully in the past.
            let end = now - now.rem_euclid(3_600_000_000) - 3_600_000_000;
            let fleet = Arc::new(Fleet::build(fleet_config(
                &args,
                end - i64::from(days) * DAY_MICROS,
                end,
            )));
            if let Some(path) = &args.truth {
                forewarn_sim::write_truth(path, &fleet.truth())?;
            }
            let config = forewarn::config::Config::default();
            let mut database = config.database.clone();
            database.max_connections = (connections as u32 + 1).max(2);
            let mut store =
                forewarn::store::Store::connect(&database_url, &database, &config.storage).await?;
            store.migrate(&config.storage).await.context("migrating")?;
            let report =
                forewarn_sim::history::write_history(fleet.clone(), &store, connections).await?;
            println!(
                "history: {} devices × {days} days: {} readings, {} events, {} failures, {} repairs in {:.1} s ({:.0} readings/s); rollup refresh {:.1} s",
                report.devices,
                report.readings,
                report.events,
                report.failures,
                report.maintenance,
                report.seconds,
                report.readings_per_sec,
                report.rollup_seconds
            );
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Live {
            fleet: args,
            mqtt_url,
            speed,
            sim_days,
            database_url,
            topic_prefix,
            connections,
            follow,
            api_url,
            api_key,
            inbound_secret,
            gateway,
        } => {
            // Following: the fleet's window runs ten years past now, published no faster
            // than the real clock.
            let end = if follow { now + 3650 * DAY_MICROS } else { now };
            let fleet = Fleet::build(fleet_config(
                &args,
                now - i64::from(sim_days) * DAY_MICROS,
                end,
            ));
            if let Some(url) = database_url {
                let config = forewarn::config::Config::default();
                let mut store =
                    forewarn::store::Store::connect(&url, &config.database, &config.storage)
                        .await?;
                store.migrate(&config.storage).await.context("migrating")?;
                forewarn_sim::history::register_fleet(&fleet, &store).await?;
            }
            let field = match (api_url, api_key) {
                (Some(api_url), Some(api_key)) => Some(forewarn_sim::field::Field::new(
                    forewarn_sim::field::FieldOptions {
                        api_url: api_url.trim_end_matches('/').to_string(),
                        api_key,
                        inbound_secret,
                        gateway,
                        seed: args.seed,
                        habits: Default::default(),
                    },
                )?),
                _ => None,
            };
            let options = forewarn_sim::live::LiveOptions {
                mqtt_url,
                topic_prefix,
                speed,
                connections,
                field,
                truth: args.truth.clone(),
            };
            let report = forewarn_sim::live::run_live(&fleet, &options, shutdown).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Load {
            mqtt_url,
            devices,
            metrics_per_message,
            messages,
            rate,
            duration,
            connections,
            topic_prefix,
        } => {
            let spec = LoadSpec {
                devices,
                metrics_per_message,
                total_messages: messages,
                rate_per_sec: rate,
                duration,
                connections,
                topic_prefix,
                ..LoadSpec::default()
            };
            let report = publish(&mqtt_url, &spec, shutdown)
                .await
                .context("publishing")?;
            println!(
                "published {} messages ({} readings) in {:.1} s: {:.0} readings/s",
                report.messages,
                report.readings,
                report.elapsed.as_secs_f64(),
                report.readings as f64 / report.elapsed.as_secs_f64()
            );
        }
        Command::Score {
            truth,
            flags,
            lookahead,
            model,
            config,
            from,
            to,
            device_days,
        } => {
            let truth: Vec<forewarn_sim::sim::TruthRecord> = forewarn_sim::read_json_lines(&truth)?;
            let flags: Vec<forewarn_sim::score::Flag> = forewarn_sim::read_json_lines(&flags)?;
            if let (Some(from), Some(to)) = (from, to)
                && from >= to
            {
                anyhow::bail!("--from ({from}) must be before --to ({to})");
            }
            let train = forewarn::config::Config::load(config.as_deref(), std::env::vars())?.train;
            let mut horizons: std::collections::HashMap<(String, String), chrono::Duration> =
                Default::default();
            if lookahead.is_none() {
                for m in &train.failure_modes {
                    if let Some(horizon) = m.horizon {
                        horizons.insert(
                            (m.kind.clone(), m.component.clone()),
                            chrono::Duration::from_std(horizon)?,
                        );
                    }
                }
                if let Some(model) = &model {
                    let artifact = forewarn::artifact::read_artifact(model)?;
                    for m in artifact.modes {
                        horizons.insert(
                            (m.mode.kind.clone(), m.mode.component.clone()),
                            chrono::Duration::seconds((m.mode.horizon_hours * 3600.0) as i64),
                        );
                    }
                }
            }
            let config = forewarn_sim::score::ScoreConfig {
                horizons,
                default_horizon: chrono::Duration::from_std(
                    lookahead.unwrap_or(train.default_horizon),
                )?,
                min_lead: chrono::Duration::hours(24),
                grace_after: chrono::Duration::days(7),
                device_days,
                from,
                to,
            };
            let (overall, per_component) = forewarn_sim::score::score(&truth, &flags, &config);
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"overall": overall, "per_component": per_component})
                )?
            );
        }
    }
    Ok(())
}
