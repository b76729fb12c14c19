//! The embedded defaults serve this machine's forewarn only: the private PostgreSQL cluster
//! takes no TCP connection and no connection without its generated password, and the
//! embedded broker admits no client without a credential it generated.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use forewarn::embedded::broker::{BrokerError, DEVICE_USER};
use forewarn::embedded::postgres::{
    ClusterOptions, PASSWORD_FILE, PrivateCluster, find_bin_dir, service_account,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use sqlx::Connection;

use crate::support::*;

/// Connects once, without a pool.
async fn connect(url: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    sqlx::PgConnection::connect(url).await
}

/// The cluster's URL without its password (what any local user could try).
fn without_password(url: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_password(None).unwrap();
    parsed.to_string()
}

fn with_password(url: &str, password: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_password(Some(password)).unwrap();
    parsed.to_string()
}

fn password_in(url: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .password()
        .unwrap()
        .to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Whether anything accepts a TCP connection on the loopback `port`.
fn tcp_accepts(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// A refused login: SQLSTATE class 28 (invalid authorization).
fn assert_login_refused(result: Result<sqlx::PgConnection, sqlx::Error>, what: &str) {
    match result {
        Ok(_) => panic!("{what}: the cluster accepted the connection"),
        Err(sqlx::Error::Database(error)) => assert!(
            error.code().is_some_and(|code| code.starts_with("28")),
            "{what}: {error}"
        ),
        Err(error) => panic!("{what}: refused, but not by authentication: {error}"),
    }
}

/// What every secured cluster shows: the socket only, the password only, private files.
/// (Whether its port number answers over TCP is checked where the number is a free one:
/// the default, 5432, may be the system server's.)
async fn assert_secured(cluster: &PrivateCluster) {
    let url = cluster.url("postgres");
    let data_dir = cluster.data_dir();
    let mut connection = connect(&url).await.expect("forewarn's URL connects");
    let listen: String = sqlx::query_scalar("show listen_addresses")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(listen, "", "no TCP listen address");
    connection.close().await.unwrap();
    assert_login_refused(connect(&without_password(&url)).await, "no password");
    assert_login_refused(
        connect(&with_password(&url, &"0".repeat(64))).await,
        "wrong password",
    );
    let hba = std::fs::read_to_string(data_dir.join("pg_hba.conf")).unwrap();
    let rules: Vec<&str> = hba
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .collect();
    assert_eq!(rules, ["local all all scram-sha-256"], "{hba}");
    assert_eq!(mode(data_dir), 0o700, "data directory");
    assert_eq!(mode(&data_dir.join(PASSWORD_FILE)), 0o600, "password file");
    assert_eq!(
        std::fs::read_to_string(data_dir.join(PASSWORD_FILE))
            .unwrap()
            .trim(),
        password_in(&url)
    );
}

/// `forewarn demo`'s path: `resolve_database` creates the cluster, forewarn connects and
/// migrates; nobody else gets in, over TCP or over the socket without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_cluster_admits_only_forewarn_through_its_socket() {
    init_logs();
    let root = std::env::temp_dir().join(unique("forewarn-secured-pg-"));
    let mut config = forewarn::config::Config::default();
    config.embedded.data_dir = root.clone();
    let (url, cluster) = forewarn::app::resolve_database(&config)
        .await
        .expect("private cluster");
    let owned = OwnedCluster::adopt(cluster.expect("a private cluster"), root);
    let store = forewarn::app::open_store(&config, &url)
        .await
        .expect("forewarn connects with its URL and migrates");
    store.close().await;
    assert!(url.contains("host=%2F"), "a socket URL: {url}");
    assert_secured(&owned.cluster).await;
    // What forewarn prints of it hides the password.
    let shown = forewarn::config::redact_url(&url);
    assert!(!shown.contains(&password_in(&url)), "{shown}");
}

/// The password is generated once: a restart and a second start reuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_reuse_the_generated_password() {
    init_logs();
    let owned = OwnedCluster::start().await;
    let data_dir = owned.cluster.data_dir().to_path_buf();
    let first_url = owned.cluster.url("postgres");
    assert!(
        !tcp_accepts(owned.cluster.port()),
        "nothing listens on 127.0.0.1:{}",
        owned.cluster.port()
    );
    let password_file = std::fs::read_to_string(data_dir.join(PASSWORD_FILE)).unwrap();
    let options = ClusterOptions {
        data_dir: data_dir.clone(),
        port: None,
        durable: false,
    };
    // Another process starting while it runs: reused as it is.
    let again = {
        let options = options.clone();
        tokio::task::spawn_blocking(move || PrivateCluster::start(&options).unwrap())
            .await
            .unwrap()
    };
    assert_eq!(again.url("postgres"), first_url);
    // Stopped, then started again (another socket name, the same password).
    let stopping = owned.cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop().unwrap())
        .await
        .unwrap();
    let restarted = tokio::task::spawn_blocking(move || PrivateCluster::start(&options).unwrap())
        .await
        .unwrap();
    let restarted_url = restarted.url("postgres");
    assert_eq!(password_in(&restarted_url), password_in(&first_url));
    assert_eq!(
        std::fs::read_to_string(data_dir.join(PASSWORD_FILE)).unwrap(),
        password_file
    );
    assert_secured(&restarted).await;
    drop(owned); // stops the server (whichever handle started it) and deletes the directory
}

/// An old-style data directory runs as the previous version left it (TCP on 127.0.0.1,
/// `trust`); stopped on drop.
struct OldCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
}

impl OldCluster {
    fn command(&self, program: &str) -> std::process::Command {
        let mut command = std::process::Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = service_account().unwrap() {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// `initdb -A trust` and a server on 127.0.0.1:`port`, as the previous version did.
    fn start(data_dir: PathBuf, port: u16) -> OldCluster {
        let old = OldCluster {
            bin_dir: find_bin_dir().unwrap(),
            data_dir,
        };
        std::fs::create_dir_all(&old.data_dir).unwrap();
        if let Some((uid, gid)) = service_account().unwrap() {
            std::os::unix::fs::chown(&old.data_dir, Some(uid), Some(gid)).unwrap();
        }
        let status = old
            .command("initdb")
            .arg("-D")
            .arg(&old.data_dir)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-instructions", "--no-sync"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let status = old
            .command("pg_ctl")
            .arg("-D")
            .arg(&old.data_dir)
            .arg("-l")
            .arg(old.data_dir.join("server.log"))
            .args(["-w", "-o"])
            .arg(format!(
                "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
            ))
            .arg("start")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        old
    }
}

impl Drop for OldCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_file(self.data_dir.with_extension("lock"));
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A data directory the previous version left running (trust, TCP) is migrated, not
/// refused: its server is stopped, the password set, pg_hba.conf rewritten, and the
/// server started on the socket only, with its data intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_left_open_by_an_earlier_version_is_secured_on_start() {
    init_logs();
    let data_dir = std::env::temp_dir().join(unique("forewarn-old-pg-"));
    let port = forewarn::embedded::free_port().unwrap();
    let old = {
        let data_dir = data_dir.clone();
        tokio::task::spawn_blocking(move || OldCluster::start(data_dir, port))
            .await
            .unwrap()
    };
    // The hole: any local user, no password, over TCP.
    let open_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let mut connection = connect(&open_url).await.expect("the old cluster is open");
    sqlx::raw_sql("create table kept (n int); insert into kept values (42)")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();

    let options = ClusterOptions {
        data_dir: data_dir.clone(),
        port: None,
        durable: false,
    };
    let cluster = tokio::task::spawn_blocking(move || PrivateCluster::start(&options))
        .await
        .unwrap()
        .expect("the old cluster is secured and started");
    let owned = OwnedCluster::adopt(cluster, data_dir);
    assert_eq!(
        owned.cluster.port(),
        port,
        "the old server's number names the socket"
    );
    assert!(!tcp_accepts(port), "nothing listens on 127.0.0.1:{port}");
    assert!(
        connect(&open_url).await.is_err(),
        "the old TCP URL no longer connects"
    );
    assert_secured(&owned.cluster).await;
    let mut connection = connect(&owned.cluster.url("postgres")).await.unwrap();
    let kept: i32 = sqlx::query_scalar("select n from kept")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(kept, 42, "the data survived the migration");
    connection.close().await.unwrap();
    drop(owned);
    drop(old);
}

/// Connects with `credentials` and reports whether the broker accepted the session.
async fn broker_admits(
    addr: std::net::SocketAddr,
    client_id: &str,
    credentials: Option<(&str, &str)>,
) -> bool {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(5));
    if let Some((username, password)) = credentials {
        options.set_credentials(username, password);
    }
    let (client, mut event_loop) = AsyncClient::new(options, 10);
    let admitted = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return ack.code == rumqttc::ConnectReturnCode::Success;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    let _ = client.try_disconnect();
    admitted
}

/// Without a credential, with a wrong one, or with the devices' credential under ingest's
/// client id (a session takeover), the embedded broker refuses; ingest with its credential
/// and devices with theirs work end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_admits_only_its_generated_credentials() {
    init_logs();
    let not_loopback =
        forewarn::embedded::broker::start("0.0.0.0:0".parse().unwrap(), 1 << 20, "x").await;
    assert!(matches!(not_loopback, Err(BrokerError::NotLoopback(_))));

    let broker = forewarn::embedded::broker::start(
        "127.0.0.1:0".parse().unwrap(),
        1 << 20,
        INGEST_CLIENT_ID_PREFIX,
    )
    .await
    .unwrap();
    let addr = broker.addr;
    let device_url = url::Url::parse(&broker.device_url()).unwrap();
    let device_password = device_url.password().unwrap().to_string();
    let ingest_url = url::Url::parse(&broker.url()).unwrap();
    let ingest_user = ingest_url.username().to_string();
    let ingest_password = ingest_url.password().unwrap().to_string();

    assert!(
        !broker_admits(addr, "stranger", None).await,
        "no credential"
    );
    assert!(
        !broker_admits(addr, "stranger", Some((DEVICE_USER, &"0".repeat(64)))).await,
        "wrong password"
    );
    assert!(
        !broker_admits(addr, "stranger", Some((&ingest_user, &device_password))).await,
        "the devices' password for ingest's user"
    );
    assert!(
        !broker_admits(
            addr,
            INGEST_CLIENT_ID_PREFIX,
            Some((DEVICE_USER, &device_password))
        )
        .await,
        "a device taking ingest's client id"
    );
    assert!(broker_admits(addr, "sim-1", Some((DEVICE_USER, &device_password))).await);
    assert!(
        broker_admits(
            addr,
            INGEST_CLIENT_ID_PREFIX,
            Some((&ingest_user, &ingest_password))
        )
        .await
    );
    // What forewarn prints of the URLs hides the passwords.
    assert!(!forewarn::config::redact_url(&broker.url()).contains(&ingest_password));

    // Ingest with its credential, a device with its own: the reading is stored.
    let db = TestDb::new().await;
    let broker = TestBroker::Embedded(broker);
    let prefix = unique("auth");
    let ingest = RunningIngest::start(ingest_settings(&broker, &prefix), db.store.clone()).await;
    let mut device = Publisher::connect(&broker).await;
    let ts = now_rfc3339(chrono::Duration::seconds(-1));
    device
        .publish(
            &format!("{prefix}/AUTH-1/telemetry"),
            format!(r#"{{"ts": "{ts}", "metrics": {{"a": 1}}}}"#),
        )
        .await;
    device.flush().await;
    let pool = db.query().await;
    wait_for_count(&pool, "select count(*) from telemetry", 1).await;
    ingest.stop().await;
}
