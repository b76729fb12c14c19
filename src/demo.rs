//! `forewarn demo`'s fleet: simulated devices publishing to this machine's forewarn, and
//! the wait until ingest has taken in what they published. The command line runs the
//! stages around it and prints the outcome.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::loadgen::{self, LoadSpec};
use crate::observability::Metrics;
use crate::shutdown::Shutdown;

/// The demo's fleet: `forewarn-sim live` when the simulator binary sits beside the running
/// one (`cargo build --release --workspace`), else the synthetic publisher.
#[derive(Debug, Clone)]
pub struct DemoFleet {
    /// Devices in the simulated fleet.
    pub devices: usize,
    /// Simulated seconds per second (3600: an hour a second).
    pub speed: f64,
    /// The fleet starts this many simulated days ago and runs up to now.
    pub sim_days: u32,
    /// Seed of the simulated fleet.
    pub seed: u64,
    /// Stop after this long; otherwise when the fleet has caught up with now.
    pub duration: Option<Duration>,
}

/// Where `forewarn-sim live` writes the fleet's ground truth (relative to the working
/// directory), for `forewarn-sim score`.
const TRUTH_FILE: &str = "data/demo-truth.jsonl";

impl DemoFleet {
    /// Publishes the fleet to `mqtt_url` (a device's credential, never ingest's) until it
    /// has caught up with now or `duration` has passed. The simulator writes its history
    /// to `database_url`. Failures are logged: the demo's stages keep running without it.
    pub async fn run(self, mqtt_url: String, database_url: String, shutdown: Shutdown) {
        let publishing = async {
            match simulator_beside_this_binary() {
                Some(simulator) => {
                    self.run_simulator(&simulator, &mqtt_url, &database_url)
                        .await
                }
                None => self.run_synthetic_publisher(&mqtt_url, shutdown).await,
            }
        };
        match self.duration {
            Some(limit) => {
                let _ = tokio::time::timeout(limit, publishing).await;
            }
            None => publishing.await,
        }
    }

    async fn run_simulator(&self, simulator: &Path, mqtt_url: &str, database_url: &str) {
        tracing::info!(
            devices = self.devices,
            speed = self.speed,
            sim_days = self.sim_days,
            "demo: simulated fleet (forewarn-sim live)"
        );
        let truth = Path::new(TRUTH_FILE);
        if let Some(directory) = truth.parent() {
            let _ = std::fs::create_dir_all(directory);
        }
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
            .arg(truth)
            .env("MQTT_URL", mqtt_url)
            .env("DATABASE_URL", database_url)
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

    async fn run_synthetic_publisher(&self, mqtt_url: &str, shutdown: Shutdown) {
        tracing::warn!(
            "forewarn-sim not found beside forewarn (cargo build --release --workspace); demo uses the synthetic publisher"
        );
        let spec = LoadSpec {
            devices: self.devices,
            rate_per_sec: Some(self.devices as f64),
            duration: Some(
                Duration::from_secs(u64::from(self.sim_days) * 86_400).div_f64(self.speed),
            ),
            connections: 1,
            device_prefix: "DEMO-".into(),
            ..Default::default()
        };
        if let Err(error) = loadgen::publish(mqtt_url, &spec, shutdown).await {
            tracing::error!(%error, "demo publisher failed");
        }
    }
}

/// `forewarn-sim` in the directory of the running executable, if it was built there.
fn simulator_beside_this_binary() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("forewarn-sim")))
        .filter(|path| path.is_file())
}

/// Polls of `wait_until_ingest_idle`, one a second: it gives up after five minutes.
const IDLE_POLLS: usize = 300;

/// Returns once ingest has been idle — nothing pending and no new readings — for two
/// seconds, or after five minutes: when the fleet stops publishing, the broker may still
/// hold a backlog for ingest.
pub async fn wait_until_ingest_idle(metrics: &Metrics) {
    let mut last = (u64::MAX, 0);
    for _ in 0..IDLE_POLLS {
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
