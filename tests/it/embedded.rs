//! The embedded broker serves this machine's forewarn only: it admits no client without a
//! credential it generated.

use std::time::Duration;

use forewarn::embedded::broker::{BrokerError, DEVICE_USER};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};

use crate::support::*;

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
