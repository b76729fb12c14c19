//! Sparkplug B against an independent encoder: PyPI's pysparkplug writes an edge node's
//! life (births with aliases, data by alias, a sequence gap, a rebirth, deaths), Mosquitto
//! carries it, and forewarn's ingest reads it as a host application.

use std::path::PathBuf;
use std::time::Duration;

use forewarn::embedded::mosquitto::Mosquitto;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::support::*;

const PYSPARKPLUG: &str = "pysparkplug==0.6.1";

/// A Python with pysparkplug: `FOREWARN_TEST_PYTHON` when set, else a virtual environment
/// made once under the system's temporary directory (from PyPI).
fn python() -> PathBuf {
    if let Ok(python) = std::env::var("FOREWARN_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    python_venv(PYSPARKPLUG)
}

fn peer(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/sparkplug_peer.py");
    let output = std::process::Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("the Sparkplug peer runs");
    assert!(
        output.status.success(),
        "sparkplug_peer.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[derive(serde::Deserialize)]
struct Step {
    step: String,
    topic: String,
    payload_hex: String,
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Listens for forewarn's node commands.
async fn command_listener(
    broker: &TestBroker,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) {
    let url = url::Url::parse(&broker.url()).unwrap();
    let options = MqttOptions::new(
        unique("fw-ncmd-"),
        url.host_str().unwrap(),
        url.port().unwrap(),
    );
    let (client, mut event_loop) = AsyncClient::new(options, 10);
    client
        .subscribe("spBv1.0/+/NCMD/+", QoS::AtMostOnce)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let _ = tx.send((publish.topic.clone(), publish.payload.to_vec()));
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {}
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    (client, rx)
}

async fn next_command(
    commands: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) -> (String, serde_json::Value) {
    let (topic, payload) = tokio::time::timeout(Duration::from_secs(10), commands.recv())
        .await
        .expect("a rebirth request within 10 s")
        .unwrap();
    let decoded: serde_json::Value =
        serde_json::from_str(&peer(&["decode", &hex(&payload)])).unwrap();
    (topic, decoded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_nodes_life_from_an_independent_encoder() {
    init_logs();
    let steps: Vec<Step> = peer(&["encode"])
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let db = TestDb::new().await;
    let broker = TestBroker::Mosquitto(Mosquitto::start(1000).expect("mosquitto"));
    let mut settings = ingest_settings(&broker, &unique("spb"));
    settings.ingest.sparkplug = true;
    let ingest = RunningIngest::start(settings, db.store.clone()).await;
    let (_listener, mut commands) = command_listener(&broker).await;
    let mut publisher = Publisher::connect(&broker).await;
    let pool = db.query().await;

    let publish_steps = async |publisher: &mut Publisher, wanted: &str| {
        for step in steps.iter().filter(|s| s.step == wanted) {
            publisher
                .publish(&step.topic, unhex(&step.payload_hex))
                .await;
        }
        publisher.flush().await;
    };

    // Births and data by alias: numbers stored under catalogue names, signed integers
    // read at their width, the string metric skipped.
    publish_steps(&mut publisher, "birth").await;
    publish_steps(&mut publisher, "data").await;
    wait_for_count(&pool, "select count(*) from telemetry", 9).await;
    let devices: Vec<(String, Option<bool>)> =
        sqlx::query_as("select external_id, online from devices order by external_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        devices,
        vec![
            ("plant1:gw1".to_string(), Some(true)),
            ("plant1:gw1:pump7".to_string(), Some(true))
        ]
    );
    let values = |metric: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, f64>(
                "select t.value from telemetry t join metrics m on m.id = t.metric_id \
                 where m.name = $1 order by t.time",
            )
            .bind(metric)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(values("cabinet_temp").await, vec![-5.0, -7.0]);
    assert_eq!(values("supply_voltage").await, vec![24.5, 23.75]);
    assert_eq!(values("flow_rate").await, vec![120.0, 118.0]);
    assert_eq!(values("motor_running").await, vec![1.0]);
    assert_eq!(values("motor_current").await, vec![3.25, 3.5]);
    assert_eq!(
        count(&pool, "select count(*) from metrics where name in ('firmware', 'bd_seq', 'node_control_rebirth')").await,
        0
    );
    assert!(
        commands.try_recv().is_err(),
        "no rebirth request while in sequence"
    );

    // A gap in seq: the reading is kept, and the node is asked for a rebirth, which an
    // independent decoder reads as Sparkplug's `Node Control/Rebirth`.
    publish_steps(&mut publisher, "gap").await;
    let (topic, command) = next_command(&mut commands).await;
    assert_eq!(topic, "spBv1.0/plant1/NCMD/gw1");
    assert_eq!(command["metrics"][0]["name"], "Node Control/Rebirth");
    assert_eq!(command["metrics"][0]["datatype"], "BOOLEAN");
    assert_eq!(command["metrics"][0]["value"], true);
    wait_for_count(&pool, "select count(*) from telemetry", 10).await;

    // The node is born again; its sequence restarts and data by alias reads on.
    publish_steps(&mut publisher, "rebirth").await;
    wait_until(
        "data after the rebirth",
        Duration::from_secs(10),
        || async { values("motor_current").await == vec![3.25, 3.5, 3.75, 3.25, 4.0] },
    )
    .await;

    // An edge node that never announced itself: its data is dead-lettered, not guessed,
    // and it is asked for a birth.
    publish_steps(&mut publisher, "unborn").await;
    let (topic, _) = next_command(&mut commands).await;
    assert_eq!(topic, "spBv1.0/plant1/NCMD/gw2");
    wait_for_count(
        &pool,
        "select count(*) from dead_letters where reason = 'sparkplug_not_born' \
         and topic = 'spBv1.0/plant1/DDATA/gw2/pump7'",
        1,
    )
    .await;

    // Deaths: the device; a stale certificate (an older connection's will) that changes
    // nothing; then the node's own.
    let offline = "select count(*) from devices where online = false";
    publish_steps(&mut publisher, "device_death").await;
    wait_for_count(&pool, offline, 1).await;
    publish_steps(&mut publisher, "stale_death").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&pool, offline).await, 1);
    publish_steps(&mut publisher, "node_death").await;
    wait_for_count(&pool, offline, 2).await;
    assert_eq!(
        count(&pool, "select count(*) from dead_letters").await,
        1,
        "nothing else was refused"
    );
    let rendered = ingest.metrics.render();
    assert!(
        rendered.contains("forewarn_ingest_sparkplug_rebirth_requests_total 2"),
        "{rendered}"
    );
    assert!(rendered.contains("forewarn_ingest_skipped_fields_total{reason=\"not_numeric\"} 2"));
    ingest.stop().await;
}
