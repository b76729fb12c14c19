//! `live` mode into a running forewarn ingest: every published reading arrives, malformed
//! messages become dead letters, and the ground truth matches what was published.
//! Real servers: PostgreSQL (`DATABASE_URL` or a private cluster) and a private Mosquitto.

use std::time::Duration;

use forewarn::embedded::mosquitto::Mosquitto;
use forewarn::ingest::{IngestDeps, IngestSettings};
use forewarn::observability::Metrics;
use forewarn::shutdown::Shutdown;
use forewarn_sim::degradation::DAY_MICROS;
use forewarn_sim::live::{LiveOptions, run_live};
use forewarn_sim::sim::{Artefacts, Fleet, SimConfig, TruthRecord};

mod common;
use common::test_store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_fleet_arrives_whole_and_truth_matches() {
    let (store, url) = test_store().await;
    let mosquitto = Mosquitto::start(1000).expect("mosquitto");
    let now = chrono::Utc::now().timestamp_micros();
    // The first seed whose fleet has failures in these three days.
    let fleet = (1..)
        .map(|seed| {
            Fleet::build(SimConfig {
                seed,
                devices: 120,
                start: now - 3 * DAY_MICROS,
                end: now,
                interval: 10 * 60 * 1_000_000,
                artefacts: Artefacts {
                    malformed_rate: 0.01,
                    ..Artefacts::default()
                },
                nuisance_scale: 1.0,
                failure_scale: 1.0,
            })
        })
        .find(|fleet| fleet.truth().len() >= 2)
        .unwrap();
    forewarn_sim::history::register_fleet(&fleet, &store)
        .await
        .unwrap();

    let config = forewarn::config::Config::default();
    let settings = IngestSettings {
        mqtt_url: mosquitto.url(),
        mqtt: forewarn::config::MqttConfig {
            client_id: format!("sim-live-test-{}", std::process::id()),
            ..config.mqtt
        },
        ingest: config.ingest,
    };
    let metrics = Metrics::new();
    let (stop, shutdown) = Shutdown::new();
    let ingest = tokio::spawn(forewarn::ingest::run(
        settings,
        IngestDeps::new(store.clone(), metrics.clone()),
        shutdown,
    ));
    for _ in 0..100 {
        if metrics.mqtt_ready() == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let options = LiveOptions {
        mqtt_url: mosquitto.url(),
        topic_prefix: "devices".into(),
        speed: 3.0 * 86_400.0,
        connections: 2,
        field: None,
        truth: None,
    };
    let (_stop_sim, sim_shutdown) = Shutdown::new();
    let report = run_live(&fleet, &options, sim_shutdown).await.unwrap();
    assert!(report.readings > 50_000, "{report:?}");
    assert!(
        report.duplicates > 0
            && report.reordered > 0
            && report.malformed > 0
            && report.buffered_bursts > 0,
        "artefacts exercised: {report:?}"
    );

    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count("select count(*) from telemetry").await < report.readings as i64
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count("select count(*) from telemetry").await,
        report.readings as i64,
        "every distinct reading stored once"
    );
    assert_eq!(
        count("select count(*) from dead_letters").await,
        report.malformed as i64,
        "each malformed message dead-lettered"
    );
    assert_eq!(
        count("select count(*) from devices where registered_by = 'auto'").await,
        0,
        "no unknown devices"
    );

    // The truth file says what happened; the published events agree.
    let path = std::env::temp_dir().join(format!("forewarn-truth-{}.jsonl", std::process::id()));
    let truth = fleet.truth();
    forewarn_sim::write_truth(&path, &truth).unwrap();
    let read_back: Vec<TruthRecord> = forewarn_sim::read_json_lines(&path).unwrap();
    assert_eq!(read_back, truth);
    let first_line = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    for field in [
        "\"device\"",
        "\"kind\"",
        "\"component\"",
        "\"onset\"",
        "\"failure_at\"",
        "\"prevented\"",
    ] {
        assert!(first_line.contains(field), "{first_line}");
    }
    let critical: Vec<(String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select d.external_id, e.message, e.time from device_events e join devices d on d.id = e.device_id
         where e.severity = 'critical'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!critical.is_empty());
    for (device, message, time) in &critical {
        let component = message.trim_end_matches(" failure");
        assert!(
            truth.iter().any(|t| &t.device == device
                && t.component == component
                && (*time - t.failure_at).num_minutes().abs() <= 11),
            "critical event {device} {message} at {time} is in the truth"
        );
    }
    // Devices offline without a buffer at the moment of failure cannot report it.
    assert!(critical.len() <= truth.len());
    let _ = std::fs::remove_file(&path);
    stop.trigger();
    ingest.await.unwrap().unwrap();
}
