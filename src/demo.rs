//! `forewarn demo`'s fleet: simulated devices publishing to this machine's forewarn, with
//! the field around them closing the loop (technicians visiting what forewarn books and
//! recording what they found through its API; customers answering its messages), the
//! `kpi:` line, and the wait until ingest has taken in what was published. The command
//! line runs the stages around it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::auth::new_key;
use crate::config::Config;
use crate::loadgen::{self, LoadSpec};
use crate::observability::Metrics;
use crate::outreach::{OutreachConfig, Secret};
use crate::shutdown::Shutdown;
use crate::store::{NewApiKey, Store, StoreError};

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
    /// Multiplies the fleet's failure rate (the simulator's `--failure-scale`).
    pub failure_scale: f64,
    /// Stop after this long; otherwise run until stopped.
    pub duration: Option<Duration>,
    /// The closed loop through forewarn's API (the simulator only).
    pub field: Option<DemoField>,
}

/// What the simulator's field needs to answer forewarn.
#[derive(Debug, Clone)]
pub struct DemoField {
    /// forewarn's HTTP server (`http://127.0.0.1:8080`).
    pub api_url: String,
    /// An `integration` key, made for this run.
    pub api_key: String,
    /// `outreach.inbound_secret`: customers' replies are signed with it.
    pub inbound_secret: String,
    /// Where the customers' phones listen (`outreach.sms_url` and the others point here).
    pub gateway: std::net::SocketAddr,
}

/// Where `forewarn-sim live` writes the fleet's ground truth (relative to the working
/// directory), for `forewarn-sim score`.
const TRUTH_FILE: &str = "data/demo-truth.jsonl";

impl DemoFleet {
    /// Publishes the fleet to `mqtt_url` (a device's credential, never ingest's): from
    /// `sim_days` ago up to now at `speed`, then in real time, until `shutdown` or until
    /// `duration` has passed. The simulator registers the fleet in `database_url`.
    /// Failures are logged: the demo's stages keep running without it.
    pub async fn run(self, mqtt_url: String, database_url: String, shutdown: Shutdown) {
        match simulator_beside_this_binary() {
            Some(simulator) => {
                self.run_simulator(&simulator, &mqtt_url, &database_url, shutdown)
                    .await
            }
            None => {
                let publishing = self.run_synthetic_publisher(&mqtt_url, shutdown);
                match self.duration {
                    Some(limit) => {
                        let _ = tokio::time::timeout(limit, publishing).await;
                    }
                    None => publishing.await,
                }
            }
        }
    }

    async fn run_simulator(
        &self,
        simulator: &Path,
        mqtt_url: &str,
        database_url: &str,
        mut shutdown: Shutdown,
    ) {
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
        let mut command = tokio::process::Command::new(simulator);
        command
            .arg("live")
            .arg("--follow")
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
                "--failure-scale",
                &self.failure_scale.to_string(),
            ])
            .arg("--truth")
            .arg(truth)
            .env("MQTT_URL", mqtt_url)
            .env("DATABASE_URL", database_url)
            .kill_on_drop(true);
        if let Some(field) = &self.field {
            command
                .args(["--gateway", &field.gateway.to_string()])
                .env("FOREWARN_API_URL", &field.api_url)
                .env("FOREWARN_API_KEY", &field.api_key)
                .env("FOREWARN_INBOUND_SECRET", &field.inbound_secret);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(%error, "could not start forewarn-sim");
                return;
            }
        };
        let limit = async {
            match self.duration {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let status = tokio::select! {
            status = child.wait() => status,
            () = limit => self.stop_simulator(&mut child).await,
            () = shutdown.wait() => self.stop_simulator(&mut child).await,
        };
        match status {
            Ok(status) if status.success() => {
                tracing::info!(truth = %truth.display(), "demo fleet stopped")
            }
            Ok(status) => tracing::error!(%status, "forewarn-sim live failed"),
            Err(error) => tracing::error!(%error, "forewarn-sim: {error}"),
        }
    }

    /// SIGTERM: the simulator writes its truth so far and waits for the broker's
    /// acknowledgements; after 10 s it is killed.
    async fn stop_simulator(
        &self,
        child: &mut tokio::process::Child,
    ) -> std::io::Result<std::process::ExitStatus> {
        if let Some(pid) = child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                let _ = child.kill().await;
                child.wait().await
            }
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

/// What can stop the demo's field from being set up.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no randomness for the demo's secrets: {0}")]
    Random(String),
    #[error("no free loopback port for the customers' gateway: {0}")]
    Io(#[from] std::io::Error),
}

/// The name of the key the demo makes for its field (the previous run's is revoked).
pub const FIELD_KEY: &str = "demo-fleet";
/// The name of the key the demo prints for its console.
pub const CONSOLE_KEY: &str = "demo-console";

/// Sets `config` up for the field's closed loop, when the simulator is here to close it:
/// customers' SMS, push and webhook messages go to the simulator's gateway on a free
/// loopback port (email: SMTP if set, else the log), replies are accepted under a fresh
/// inbound secret, and links point at this server. Returns the field without its key
/// ([`make_field_key`] makes it once the database is open); `None` when the simulator is
/// missing or a channel is already set up (the demo then leaves them alone).
pub fn prepare_field(config: &mut Config) -> Result<Option<DemoField>, DemoError> {
    let outreach = &mut config.outreach;
    if simulator_beside_this_binary().is_none()
        || outreach.sms_url.is_some()
        || outreach.push_url.is_some()
        || outreach.webhook_url.is_some()
    {
        return Ok(None);
    }
    let gateway = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let phones = format!("http://{gateway}");
    outreach.sms_url = Some(Secret::new(format!("{phones}/sms")));
    outreach.push_url = Some(Secret::new(format!("{phones}/push")));
    outreach.webhook_url = Some(Secret::new(format!("{phones}/webhook")));
    if outreach.signing_secret.is_none() {
        outreach.signing_secret = Some(Secret::new(random_hex()?));
    }
    let inbound_secret = match &outreach.inbound_secret {
        Some(secret) => secret.expose().to_string(),
        None => {
            let secret = random_hex()?;
            outreach.inbound_secret = Some(Secret::new(secret.clone()));
            secret
        }
    };
    let mut server = config.http.addr;
    if server.ip().is_unspecified() {
        server.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let api_url = format!("http://{server}");
    if outreach.public_url == OutreachConfig::default().public_url {
        outreach.public_url = api_url.clone();
    }
    Ok(Some(DemoField {
        api_url,
        api_key: String::new(),
        inbound_secret,
        gateway,
    }))
}

/// Makes a key of the demo's (`FIELD_KEY`: `integration`; `CONSOLE_KEY`: `dispatcher`),
/// and revokes the one of that name an earlier run made.
pub async fn make_demo_key(store: &Store, name: &str, role: &str) -> Result<String, DemoError> {
    for old in store.api_keys().await? {
        if old.name == name && old.revoked_at.is_none() {
            store.revoke_api_key(old.id).await?;
        }
    }
    let key = new_key().map_err(|e| DemoError::Random(e.to_string()))?;
    store
        .create_api_key(&NewApiKey {
            name,
            role,
            technician_id: None,
            prefix: &key.prefix,
            hash: &key.hash,
            created_by: "demo",
        })
        .await?;
    Ok(key.key)
}

/// 32 random bytes as hex.
fn random_hex() -> Result<String, DemoError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| DemoError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
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

/// Prints the `kpi:` line every `every` until the process stops.
pub async fn print_kpis(store: crate::store::Store, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store.totals().await {
            Ok(t) => println!(
                "kpi: proactive={} reactive={} incidents={} booked={} messages={} prevented={} missed={}",
                t.proactive, t.reactive, t.incidents, t.booked, t.messages, t.prevented, t.missed
            ),
            Err(error) => tracing::warn!(%error, "kpi: the totals could not be read"),
        }
    }
}
