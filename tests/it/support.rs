//! Test harness: real PostgreSQL and a real MQTT broker, over real connections.
//!
//! Database: `DATABASE_URL` when set (each test gets its own database on that server),
//! else a private cluster shared by the test processes (`/tmp/forewarn-test-pg`), started
//! from the PostgreSQL binaries on the machine. `TEST_SHARED_DATABASE=1` (the TimescaleDB
//! lane: one database, one connection) makes tests share `DATABASE_URL` itself.
//! Broker: `MQTT_URL` when set, else a private Mosquitto with forewarn's configuration, else
//! the embedded broker. Every test uses its own topic prefix, so tests never see each
//! other's messages on a shared broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use forewarn::config::{
    Config, DatabaseConfig, IngestConfig, MqttConfig, StorageConfig, TimescaleMode,
};
use forewarn::embedded::mosquitto::Mosquitto;
use forewarn::embedded::postgres::{ClusterOptions, PrivateCluster};
use forewarn::ingest::{IngestDeps, IngestSettings};
use forewarn::observability::Metrics;
use forewarn::shutdown::{Shutdown, ShutdownTrigger};
use forewarn::store::Store;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test in this run: `t{pid}_{n}`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn init_logs() {
    forewarn::observability::init_tracing(
        &forewarn::config::LogConfig {
            filter: "warn,forewarn=info".into(),
            ..Default::default()
        },
        std::env::var("RUST_LOG").ok().as_deref(),
    );
}

pub fn storage_config() -> StorageConfig {
    StorageConfig {
        use_copy: std::env::var("TEST_USE_COPY")
            .map(|v| v != "false")
            .unwrap_or(true),
        timescaledb: match std::env::var("TEST_TIMESCALEDB").as_deref() {
            Ok("require") => TimescaleMode::Require,
            Ok("off") => TimescaleMode::Off,
            _ => TimescaleMode::Auto,
        },
        ..StorageConfig::default()
    }
}

fn database_config() -> DatabaseConfig {
    let shared = std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1");
    DatabaseConfig {
        max_connections: if shared { 1 } else { 4 },
        ..DatabaseConfig::default()
    }
}

/// The server tests create their databases on.
pub struct TestServer {
    pub admin_url: String,
    pub shared: bool,
}

pub fn test_server() -> TestServer {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let shared = std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1");
        return TestServer {
            admin_url: url,
            shared,
        };
    }
    let options = ClusterOptions {
        data_dir: std::env::temp_dir().join("forewarn-test-pg"),
        port: None,
        durable: false,
    };
    let cluster = PrivateCluster::start(&options).expect("private PostgreSQL cluster for tests");
    TestServer {
        admin_url: cluster.url("postgres"),
        shared: false,
    }
}

/// A private cluster owned by one test: stopped and deleted when dropped, also when the
/// test fails, so that no server outlives its test.
pub struct OwnedCluster {
    pub cluster: Arc<PrivateCluster>,
    /// Deleted on drop: the data directory, or a directory holding it.
    remove: std::path::PathBuf,
}

impl OwnedCluster {
    pub async fn start() -> OwnedCluster {
        let data_dir = std::env::temp_dir().join(unique("forewarn-owned-pg-"));
        // A free number, so that tests can check that nothing listens on it over TCP.
        let options = ClusterOptions {
            data_dir: data_dir.clone(),
            port: Some(forewarn::embedded::free_port().expect("a free port")),
            durable: false,
        };
        let cluster = tokio::task::spawn_blocking(move || {
            PrivateCluster::start(&options).expect("private cluster")
        })
        .await
        .unwrap();
        OwnedCluster::adopt(cluster, data_dir)
    }

    /// Takes charge of a cluster started elsewhere; `remove` is deleted on drop.
    pub fn adopt(cluster: PrivateCluster, remove: std::path::PathBuf) -> OwnedCluster {
        OwnedCluster {
            cluster: Arc::new(cluster),
            remove,
        }
    }
}

impl Drop for OwnedCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
        let _ = std::fs::remove_file(self.cluster.data_dir().with_extension("lock"));
        let _ = std::fs::remove_dir_all(&self.remove);
    }
}

/// A migrated database of this test's own.
pub struct TestDb {
    pub url: String,
    pub store: Store,
    /// The store's own pool (`store::testing`): the one-connection lane's checks share it,
    /// and a few tests look at the store's connections themselves.
    store_pool: sqlx::PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let server = tokio::task::spawn_blocking(test_server).await.unwrap();
        TestDb::on(&server.admin_url, server.shared).await
    }

    pub async fn on(admin_url: &str, shared: bool) -> TestDb {
        let url = if shared {
            admin_url.to_string()
        } else {
            let name = unique("fw_test_");
            // The name is unique within this run only: a process of an earlier run with
            // the same pid left a database of that name behind. Start from an empty one.
            forewarn::store::drop_database(admin_url, &name)
                .await
                .expect("drop a stale test database");
            forewarn::store::create_database(admin_url, &name)
                .await
                .expect("create test database");
            forewarn::store::url_with_database(admin_url, &name).unwrap()
        };
        let (mut store, store_pool) = forewarn::store::testing::connect_sharing_pool(
            &url,
            &database_config(),
            &storage_config(),
        )
        .await
        .expect("connect");
        store.migrate(&storage_config()).await.expect("migrate");
        TestDb {
            url,
            store,
            store_pool,
        }
    }

    /// The store's own connections (the TimescaleDB lane serves one connection in all, so
    /// checks there must share them).
    pub fn store_pool(&self) -> &sqlx::PgPool {
        &self.store_pool
    }

    /// A second pool on the same database (for checks while ingest holds its own).
    pub async fn query(&self) -> sqlx::PgPool {
        if std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1") {
            return self.store_pool.clone();
        }
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .unwrap()
    }
}

/// The broker a test publishes to.
pub enum TestBroker {
    External(String),
    Mosquitto(Mosquitto),
    Embedded(forewarn::embedded::broker::EmbeddedBroker),
}

impl TestBroker {
    /// Mosquitto (private, or `MQTT_URL`) is required for durability and shared
    /// subscriptions; the embedded broker serves the rest when Mosquitto is absent.
    pub async fn start(require_mosquitto: bool) -> TestBroker {
        if let Ok(url) = std::env::var("MQTT_URL") {
            return TestBroker::External(url);
        }
        match Mosquitto::start(1000) {
            Ok(mosquitto) => TestBroker::Mosquitto(mosquitto),
            Err(error) if require_mosquitto => panic!("this test needs Mosquitto: {error}"),
            Err(_) => {
                let broker = forewarn::embedded::broker::start(
                    "127.0.0.1:0".parse().unwrap(),
                    1 << 20,
                    INGEST_CLIENT_ID_PREFIX,
                )
                .await
                .unwrap();
                TestBroker::Embedded(broker)
            }
        }
    }

    /// The URL ingest connects with.
    pub fn url(&self) -> String {
        match self {
            TestBroker::External(url) => url.clone(),
            TestBroker::Mosquitto(mosquitto) => mosquitto.url(),
            TestBroker::Embedded(broker) => broker.url(),
        }
    }

    /// The URL devices publish with (the embedded broker has a credential for them).
    pub fn device_url(&self) -> String {
        match self {
            TestBroker::Embedded(broker) => broker.device_url(),
            other => other.url(),
        }
    }
}

/// Every test ingester's client id starts with this (`unique` adds the rest); the embedded
/// broker reserves it for ingest's credential.
pub const INGEST_CLIENT_ID_PREFIX: &str = "fw-ingest-";

/// Settings for an ingester on `broker` with its own topic prefix and client id.
pub fn ingest_settings(broker: &TestBroker, prefix: &str) -> IngestSettings {
    let config = Config::default();
    IngestSettings {
        mqtt_url: broker.url(),
        mqtt: MqttConfig {
            client_id: unique(INGEST_CLIENT_ID_PREFIX),
            topic_prefix: prefix.to_string(),
            keep_alive: Duration::from_secs(5),
            // The embedded broker (rumqttd) serves MQTT 3.1.1; Mosquitto gets the default (5).
            protocol: match broker {
                TestBroker::Embedded(_) => forewarn::embedded::broker::PROTOCOL,
                _ => config.mqtt.protocol,
            },
            ..config.mqtt
        },
        ingest: IngestConfig {
            max_payload_bytes: 4096,
            // One ingester, one session, unless a test asks for more.
            sessions: 1,
            ..config.ingest
        },
    }
}

/// An ingester running in this process.
pub struct RunningIngest {
    pub metrics: Arc<Metrics>,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<Result<(), forewarn::ingest::IngestError>>,
}

impl RunningIngest {
    pub async fn start(settings: IngestSettings, store: Store) -> RunningIngest {
        RunningIngest::start_with(settings, IngestDeps::new(store, Metrics::new())).await
    }

    pub async fn start_with(settings: IngestSettings, deps: IngestDeps) -> RunningIngest {
        let metrics = deps.metrics.clone();
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(forewarn::ingest::run(settings, deps, shutdown));
        let ingest = RunningIngest {
            metrics,
            trigger,
            task,
        };
        ingest.wait_connected().await;
        ingest
    }

    pub async fn wait_connected(&self) {
        wait_until("ingest connected", Duration::from_secs(10), || async {
            self.metrics.mqtt_ready() == Some(true)
        })
        .await;
        // The subscription is queued on ConnAck; give the broker a moment to apply it.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    pub async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("ingest stops within 20 s")
            .unwrap()
            .unwrap();
    }

    /// Waits for the session to end by itself (injected crash).
    pub async fn join(self) {
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("ingest ends")
            .unwrap()
            .unwrap();
    }
}

/// A device-side publisher: QoS 1, waits for the broker's acknowledgement of everything.
pub struct Publisher {
    client: AsyncClient,
    acked: tokio::sync::watch::Receiver<usize>,
    sent: usize,
    poller: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn connect(broker: &TestBroker) -> Publisher {
        Publisher::open(broker, true).await
    }

    /// With a persistent session (clean session off): across a broker restart that keeps
    /// sessions, the client republishes what the broker had not acknowledged (with a clean
    /// session it drops it, as the broker forgot the session).
    pub async fn connect_persistent(broker: &TestBroker) -> Publisher {
        Publisher::open(broker, false).await
    }

    async fn open(broker: &TestBroker, clean_session: bool) -> Publisher {
        let url = url::Url::parse(&broker.device_url()).unwrap();
        let mut options = MqttOptions::new(
            unique("fw-pub-"),
            url.host_str().unwrap(),
            url.port().unwrap_or(1883),
        );
        if !url.username().is_empty() {
            options.set_credentials(url.username(), url.password().unwrap_or_default());
        }
        options
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(500)
            .set_clean_session(clean_session);
        let (client, mut event_loop) = AsyncClient::new(options, 1000);
        let (acked_tx, acked) = tokio::sync::watch::channel(0usize);
        let poller = tokio::spawn(async move {
            let mut n_acked = 0;
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        n_acked += 1;
                        acked_tx.send_replace(n_acked);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Publisher {
            client,
            acked,
            sent: 0,
            poller,
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        self.sent += 1;
    }

    pub async fn publish_retained(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
            .unwrap();
        self.sent += 1;
    }

    /// Publishes the broker has acknowledged so far.
    pub fn acked(&self) -> usize {
        *self.acked.borrow()
    }

    /// Waits until the broker has acknowledged every publish.
    pub async fn flush(&mut self) {
        let sent = self.sent;
        tokio::time::timeout(
            Duration::from_secs(30),
            self.acked.wait_for(|acked| *acked >= sent),
        )
        .await
        .expect("broker acknowledges publishes")
        .unwrap();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// Polls `condition` until it holds or `timeout` passes (then panics with `what`).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

pub async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Waits until `sql` (a count) reaches `expected`, then checks it stays there briefly.
pub async fn wait_for_count(pool: &sqlx::PgPool, sql: &'static str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = -1;
    while Instant::now() < deadline {
        last = count(pool, sql).await;
        if last >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, expected, "{sql}");
}

pub fn now_rfc3339(offset: chrono::Duration) -> String {
    (chrono::Utc::now() + offset).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `forewarn ingest` as its own process, with a persistent session named `client_id`.
pub fn spawn_ingest(
    database_url: &str,
    mqtt_url: &str,
    client_id: &str,
    prefix: &str,
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_forewarn"))
        .arg("ingest")
        .env("DATABASE_URL", database_url)
        .env("MQTT_URL", mqtt_url)
        .env("FOREWARN_HTTP_ADDR", "127.0.0.1:0")
        .env("FOREWARN_MQTT__CLIENT_ID", client_id)
        .env("FOREWARN_MQTT__TOPIC_PREFIX", prefix)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Sends SIGTERM to a forewarn process (what an orchestrator does to stop it).
pub fn sigterm(process: &std::process::Child) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(process.id().to_string())
        .status();
}

/// A Python with `requirement` (`aiosmtpd==1.4.6`) installed from PyPI into a virtual
/// environment made once under the system's temporary directory, named by it.
pub fn python_venv(requirement: &str) -> std::path::PathBuf {
    let name: String = requirement
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let venv = std::env::temp_dir().join(format!("forewarn-test-{name}"));
    let python = venv.join("bin/python");
    let ready = venv.join(".ready");
    if !ready.exists() {
        let run = |command: &mut std::process::Command| {
            let output = command.output().expect("python3 runs");
            assert!(
                output.status.success(),
                "{command:?} failed (this test needs python3 with venv, and PyPI): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        // A unique scratch name, renamed into place: tests installing at once race safely.
        let scratch = venv.with_extension(unique("tmp"));
        run(std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&scratch));
        run(
            std::process::Command::new(scratch.join("bin/python")).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                requirement,
            ]),
        );
        std::fs::write(scratch.join(".ready"), requirement).unwrap();
        if std::fs::rename(&scratch, &venv).is_err() {
            // Another test made it first.
            let _ = std::fs::remove_dir_all(&scratch);
        }
    }
    python
}

/// A key of `role` (a technician key bound to `technician`), stored as `forewarn keys
/// create` stores it; the key.
pub async fn make_key(store: &Store, role: &str, technician: Option<i32>) -> String {
    let key = forewarn::api::auth::new_key().unwrap();
    store
        .create_api_key(&forewarn::store::NewApiKey {
            name: &unique(&format!("{role}-")),
            role,
            technician_id: technician,
            prefix: &key.prefix,
            hash: &key.hash,
            created_by: "test",
        })
        .await
        .unwrap();
    key.key
}
