//! `forewarn-sim`: the fleet simulator. For now it carries the synthetic load publisher
//! (`load`) that the spine's benchmark and demo use; the realistic fleet (`live`,
//! `history`, ground truth) is the simulator issue's.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use forewarn::loadgen::{LoadSpec, publish};
use forewarn::shutdown::{Shutdown, os_signal};

#[derive(Parser)]
#[command(name = "forewarn-sim", version, about = "Fleet simulator for forewarn")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish synthetic telemetry as fast as the broker takes it (or at `--rate`).
    Load {
        /// Broker; env MQTT_URL.
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    match Cli::parse().command {
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
            let (trigger, shutdown) = Shutdown::new();
            tokio::spawn(async move {
                os_signal().await;
                trigger.trigger();
            });
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
            Ok(())
        }
    }
}
