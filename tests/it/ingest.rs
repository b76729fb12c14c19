//! Device → broker → ingest → database, including every rule for bad input, redelivery
//! after a crash, a database outage, and shared subscriptions.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use forewarn::ingest::IngestDeps;
use forewarn::observability::Metrics;
use sqlx::Row;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_events_and_status_round_trip() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::start(false).await;
    let prefix = unique("rt");
    let ingest = RunningIngest::start(ingest_settings(&broker, &prefix), db.store.clone()).await;
    let mut device = Publisher::connect(&broker).await;
    let ts = now_rfc3339(chrono::Duration::seconds(-60));
    device
        .publish(&format!("{prefix}/WM-1/telemetry"), format!(r#"{{"ts": "{ts}", "metrics": {{"drum_vibration_rms": 0.42, "motor_temp_c": 61.5, "door_open": true}}}}"#))
        .await;
    let epoch_ms = chrono::Utc::now().timestamp_millis() - 30_000;
    device
        .publish(&format!("{prefix}/WM-1/telemetry"), format!(r#"[{{"ts": {epoch_ms}, "seq": 1, "metrics": {{"motor_temp_c": 62}}}}, {{"ts": {}, "seq": 2, "metrics": {{"motor_temp_c": 63}}}}]"#, epoch_ms + 1000))
        .await;
    device
        .publish(
            &format!("{prefix}/WM-1/telemetry"),
            r#"{"metrics": {"motor_temp_c": 64}}"#,
        )
        .await;
    device
        .publish(&format!("{prefix}/WM-1/events"), format!(r#"{{"ts": {epoch_ms}, "code": "E42", "severity": "warning", "message": "door lock retry"}}"#))
        .await;
    device
        .publish_retained(&format!("{prefix}/WM-1/status"), "online")
        .await;
    device.flush().await;

    let pool = db.query().await;
    wait_for_count(&pool, "select count(*) from telemetry", 6).await;
    wait_for_count(&pool, "select count(*) from device_events", 1).await;
    wait_until("status stored", Duration::from_secs(10), || async {
        count(&pool, "select count(*) from devices where online").await == 1
    })
    .await;
    let row = sqlx::query(
        "select t.value, t.time_estimated from telemetry t join metrics m on m.id = t.metric_id
         where m.name = 'door_open'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.get::<f64, _>(0), 1.0, "booleans are stored as 0/1");
    assert!(!row.get::<bool, _>(1));
    assert_eq!(
        count(&pool, "select count(*) from telemetry where time_estimated").await,
        1,
        "the reading without ts is flagged"
    );
    let event = sqlx::query("select code, severity, message from device_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(event.get::<String, _>(0), "E42");
    assert_eq!(event.get::<String, _>(1), "warning");
    assert_eq!(
        count(
            &pool,
            "select count(*) from devices where external_id = 'WM-1' and registered_by = 'auto'"
        )
        .await,
        1
    );
    assert_eq!(count(&pool, "select count(*) from dead_letters").await, 0);

    ingest.stop().await;
    // last_seen_at is written at the latest on shutdown: the newest event time received.
    let last_seen: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select last_seen_at from devices where external_id = 'WM-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(last_seen.is_some());
}

/// One bad message between two valid ones, all in the same burst: the bad one lands in
/// `dead_letters` with its reason and raw bytes, the valid ones arrive.
async fn bad_message_is_dead_lettered(
    topic_suffix: &str,
    payload: Vec<u8>,
    reason: &str,
    configure: fn(&mut forewarn::ingest::IngestSettings),
) {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::start(false).await;
    let prefix = unique("bad");
    let mut settings = ingest_settings(&broker, &prefix);
    configure(&mut settings);
    if !settings.ingest.auto_register {
        db.store
            .upsert_device("GOOD-1", "washer", None)
            .await
            .unwrap();
    }
    if !settings.ingest.open_metric_catalogue {
        let pool = db.query().await;
        sqlx::query("insert into metrics (name) values ('motor_temp_c')")
            .execute(&pool)
            .await
            .unwrap();
    }
    let ingest = RunningIngest::start(settings, db.store.clone()).await;
    let mut device = Publisher::connect(&broker).await;
    let valid = |value: i32| {
        format!(
            r#"{{"ts": "{}", "metrics": {{"motor_temp_c": {value}}}}}"#,
            now_rfc3339(chrono::Duration::seconds(-i64::from(value)))
        )
    };
    device
        .publish(&format!("{prefix}/GOOD-1/telemetry"), valid(1))
        .await;
    let bad_topic = format!("{prefix}/{topic_suffix}");
    device.publish(&bad_topic, payload.clone()).await;
    device
        .publish(&format!("{prefix}/GOOD-1/telemetry"), valid(2))
        .await;
    device.flush().await;

    let pool = db.query().await;
    wait_for_count(&pool, "select count(*) from telemetry", 2).await;
    wait_for_count(&pool, "select count(*) from dead_letters", 1).await;
    let dead = sqlx::query("select topic, payload, reason, detail from dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dead.get::<String, _>(0), bad_topic);
    let stored: Vec<u8> = dead.get(1);
    assert_eq!(stored, payload[..stored.len()], "raw bytes kept");
    assert_eq!(dead.get::<String, _>(2), reason);
    assert!(
        !dead.get::<String, _>(3).is_empty(),
        "detail says what was wrong"
    );
    // Counted once its batch is committed (just after the row becomes visible).
    let expected = format!("forewarn_ingest_dead_letters_total{{reason=\"{reason}\"}} 1");
    wait_until("dead letter counted", Duration::from_secs(5), || async {
        ingest.metrics.render().contains(&expected)
    })
    .await;
    ingest.stop().await;
}

fn defaults(_: &mut forewarn::ingest::IngestSettings) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_dead_lettered() {
    bad_message_is_dead_lettered(
        "DEV-1/telemetry",
        b"{\"metrics\": {".to_vec(),
        "invalid_json",
        defaults,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_dead_lettered() {
    bad_message_is_dead_lettered(
        "DEV-1/telemetry",
        vec![0xff, 0xfe, b'{', 0x00],
        "invalid_utf8",
        defaults,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_are_dead_lettered() {
    bad_message_is_dead_lettered(
        "DEV-1/telemetry",
        br#"{"metrics": {"motor_temp_c": "hot"}}"#.to_vec(),
        "invalid_payload",
        defaults,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_event_is_dead_lettered() {
    bad_message_is_dead_lettered(
        "DEV-1/events",
        br#"{"code": "E1", "severity": "apocalyptic"}"#.to_vec(),
        "invalid_payload",
        defaults,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_is_dead_lettered() {
    bad_message_is_dead_lettered(
        "DEV-1/telemetry",
        br#"{"metrics": {"motor_temp_c": "NaN"}}"#.to_vec(),
        "non_finite_value",
        defaults,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metric_name_is_dead_lettered() {
    bad_message_is_dead_lettered(
        "DEV-1/telemetry",
        br#"{"metrics": {"Motor Temp": 1}}"#.to_vec(),
        "invalid_metric_name",
        defaults,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_timestamp_is_dead_lettered() {
    let payload = format!(
        r#"{{"ts": "{}", "metrics": {{"motor_temp_c": 1}}}}"#,
        now_rfc3339(chrono::Duration::hours(2))
    );
    bad_message_is_dead_lettered(
        "DEV-1/telemetry",
        payload.into_bytes(),
        "timestamp_in_future",
        defaults,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ancient_timestamp_is_dead_lettered() {
    bad_message_is_dead_lettered(
        "DEV-1/telemetry",
        br#"{"ts": "2001-01-01T00:00:00Z", "metrics": {"motor_temp_c": 1}}"#.to_vec(),
        "timestamp_too_old",
        defaults,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payload_is_dead_lettered_and_truncated() {
    let payload = format!(
        r#"{{"metrics": {{"motor_temp_c": 1}}, "pad": "{}"}}"#,
        "x".repeat(10_000)
    );
    bad_message_is_dead_lettered(
        "DEV-1/telemetry",
        payload.into_bytes(),
        "payload_too_large",
        defaults,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_device_id_in_topic_is_dead_lettered() {
    bad_message_is_dead_lettered(
        "bad id!/telemetry",
        br#"{"metrics": {"motor_temp_c": 1}}"#.to_vec(),
        "invalid_topic",
        defaults,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_metric_is_dead_lettered_when_catalogue_is_closed() {
    bad_message_is_dead_lettered(
        "GOOD-1/telemetry",
        br#"{"metrics": {"not_in_catalogue": 1}}"#.to_vec(),
        "unknown_metric",
        |s| s.ingest.open_metric_catalogue = false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_device_is_dead_lettered_when_auto_registration_is_off() {
    bad_message_is_dead_lettered(
        "STRANGER-9/telemetry",
        br#"{"metrics": {"motor_temp_c": 1}}"#.to_vec(),
        "unknown_device",
        |s| s.ingest.auto_register = false,
    )
    .await;
}

/// What devices already send, over a real broker: ThingsBoard's flat and `ts`+`values`
/// forms and arrays of them are stored; a field that is not a reading (`"fw": "1.2"`) is
/// skipped and counted while the rest of its message is kept; a message with nothing
/// numeric is a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_devices_already_send_are_stored_field_by_field() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::start(false).await;
    let prefix = unique("forms");
    let settings = ingest_settings(&broker, &prefix);
    let ingest_client_id = settings.mqtt.client_id.clone();
    let ingest = RunningIngest::start(settings, db.store.clone()).await;
    let mut device = Publisher::connect(&broker).await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let topic = format!("{prefix}/TB-1/telemetry");
    for payload in [
        r#"{"temperature": 42, "humidity": 73}"#.to_string(),
        format!(
            r#"{{"ts": {}, "values": {{"temperature": 43, "humidity": 74}}}}"#,
            now_ms - 3_000
        ),
        format!(
            r#"[{{"ts": {}, "values": {{"temperature": 44, "humidity": 75}}}}, {{"ts": {}, "values": {{"temperature": 45, "humidity": 76}}}}]"#,
            now_ms - 2_000,
            now_ms - 1_000
        ),
        format!(
            r#"{{"ts": {}, "fw": "1.2", "metrics": {{"motor_temp_c": 61.5, "mode": "eco"}}}}"#,
            now_ms - 500
        ),
        r#"{"batteryLevel": 87, "firmwareVersion": "1.2"}"#.to_string(),
        r#"{"key1":"value1", "key2":"value2"}"#.to_string(),
    ] {
        device.publish(&topic, payload).await;
    }
    device.flush().await;

    let pool = db.query().await;
    wait_for_count(&pool, "select count(*) from telemetry", 10).await;
    wait_for_count(&pool, "select count(*) from dead_letters", 1).await;
    let estimated = count(&pool, "select count(*) from telemetry where time_estimated").await;
    assert_eq!(
        estimated, 3,
        "the flat forms carry no time: receive time, flagged"
    );
    let names: Vec<String> = sqlx::query_scalar(
        "select m.name from telemetry t join metrics m on m.id = t.metric_id
         group by m.name order by m.name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        names,
        vec!["battery_level", "humidity", "motor_temp_c", "temperature"]
    );
    let reason: String = sqlx::query_scalar("select reason from dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(reason, "invalid_payload");
    let session = format!(
        "forewarn_ingest_mqtt_session_connected{{session=\"{}\"}}",
        ingest_client_id
    );
    assert_eq!(
        metric_value(&ingest.metrics.render(), &session),
        1.0,
        "{session}"
    );
    wait_until("skipped fields counted", Duration::from_secs(5), || async {
        let text = ingest.metrics.render();
        metric_value(
            &text,
            "forewarn_ingest_skipped_fields_total{reason=\"not_numeric\"}",
        ) == 2.0
            && metric_value(
                &text,
                "forewarn_ingest_skipped_fields_total{reason=\"unknown_key\"}",
            ) == 1.0
    })
    .await;
    ingest.stop().await;
}

/// The ingester commits a batch and dies before acking it. The broker keeps the session
/// and resends; the restarted ingester stores nothing twice and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_commit_before_ack_loses_nothing_and_duplicates_nothing() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::start(true).await;
    let prefix = unique("crash");
    let settings = ingest_settings(&broker, &prefix);
    let deps = IngestDeps {
        crash_after_commits: Some(Arc::new(AtomicUsize::new(1))),
        ..IngestDeps::new(db.store.clone(), Metrics::new())
    };
    let crashing = RunningIngest::start_with(settings.clone(), deps).await;

    let mut device = Publisher::connect(&broker).await;
    let n_messages = 300;
    for message_idx in 0..n_messages {
        let ts = now_rfc3339(chrono::Duration::milliseconds(
            -(n_messages - message_idx) * 10,
        ));
        device
            .publish(
                &format!("{prefix}/D-{}/telemetry", message_idx % 7),
                format!(r#"{{"ts": "{ts}", "metrics": {{"a": {message_idx}, "b": 1}}}}"#),
            )
            .await;
    }
    device.flush().await;
    crashing.join().await;
    let pool = db.query().await;
    let after_crash = count(&pool, "select count(*) from telemetry").await;
    assert!(
        after_crash > 0,
        "the first batch was committed before the crash"
    );

    // Restart with the same client id: the broker resends what was never acked.
    let restarted = RunningIngest::start(settings, db.store.clone()).await;
    wait_for_count(&pool, "select count(*) from telemetry", 2 * n_messages).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&pool, "select count(*) from telemetry").await,
        2 * n_messages,
        "nothing stored twice"
    );
    wait_until(
        "the committed-but-unacked batch came back and was absorbed",
        Duration::from_secs(5),
        || async {
            metric_value(
                &restarted.metrics.render(),
                "forewarn_ingest_duplicate_readings_total",
            ) >= 1.0
        },
    )
    .await;
    restarted.stop().await;
}

/// The same through a real process: `forewarn ingest` killed with SIGKILL mid-stream and
/// started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_process_resumes_without_loss_or_duplicates() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::start(true).await;
    let prefix = unique("kill");
    let client_id = unique("fw-kill-");
    let spawn = || spawn_ingest(&db.url, &broker.url(), &client_id, &prefix);
    let mut process = spawn();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut device = Publisher::connect(&broker).await;
    let n_messages: i64 = 3000;
    let pool = db.query().await;
    for message_idx in 0..n_messages {
        let ts = now_rfc3339(chrono::Duration::milliseconds(-(n_messages - message_idx)));
        device
            .publish(
                &format!("{prefix}/K-{}/telemetry", message_idx % 13),
                format!(r#"{{"ts": "{ts}", "metrics": {{"x": {message_idx}}}}}"#),
            )
            .await;
        if message_idx == n_messages / 2 {
            device.flush().await;
            process.kill().unwrap(); // SIGKILL: no flush, no acks, no disconnect
            process.wait().unwrap();
        }
    }
    device.flush().await;
    let stored_while_down = count(&pool, "select count(*) from telemetry").await;
    assert!(stored_while_down < n_messages);
    process = spawn();
    wait_for_count(&pool, "select count(*) from telemetry", n_messages).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&pool, "select count(*) from telemetry").await,
        n_messages
    );
    sigterm(&process);
    let status = process.wait().unwrap();
    assert!(status.success(), "SIGTERM gives a clean exit: {status}");
}

/// PostgreSQL stops mid-stream and comes back: ingest holds what it has unacked, the
/// broker holds the rest, and every reading arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_loses_nothing() {
    init_logs();
    if std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1") {
        return; // the outage needs a cluster this test owns
    }
    let owned = OwnedCluster::start().await;
    let cluster = owned.cluster.clone();
    let db = TestDb::on(&cluster.url("postgres"), false).await;
    let broker = TestBroker::start(true).await;
    let prefix = unique("outage");
    let ingest = RunningIngest::start(ingest_settings(&broker, &prefix), db.store.clone()).await;
    let mut device = Publisher::connect(&broker).await;
    let n_messages: i64 = 2000;
    for message_idx in 0..n_messages {
        let ts = now_rfc3339(chrono::Duration::milliseconds(-(n_messages - message_idx)));
        device
            .publish(
                &format!("{prefix}/O-{}/telemetry", message_idx % 11),
                format!(r#"{{"ts": "{ts}", "metrics": {{"v": {message_idx}}}}}"#),
            )
            .await;
        if message_idx == n_messages / 4 {
            device.flush().await;
            let cluster = cluster.clone();
            tokio::task::spawn_blocking(move || cluster.stop().unwrap())
                .await
                .unwrap();
        }
        if message_idx % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    device.flush().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = metric_value(&ingest.metrics.render(), "forewarn_ingest_pending_messages");
    assert!(
        held > 0.0,
        "while the database is down, received messages are held unacknowledged"
    );
    let restart = cluster.clone();
    tokio::task::spawn_blocking(move || restart.restart().unwrap())
        .await
        .unwrap();
    let pool = db.query().await;
    wait_for_count(&pool, "select count(*) from telemetry", n_messages).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&pool, "select count(*) from telemetry").await,
        n_messages
    );
    assert_eq!(
        count(
            &pool,
            "select count(distinct (device_id, metric_id, time)) from telemetry"
        )
        .await,
        n_messages
    );
    ingest.stop().await;
    pool.close().await;
    db.store.close().await;
    drop(owned); // stops and deletes the cluster (also on failure, by unwinding)
}

/// Two ingesters in one shared-subscription group split one stream: nothing lost,
/// nothing doubled, and both did work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_splits_the_stream() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::start(true).await;
    let prefix = unique("shared");
    let mut first_settings = ingest_settings(&broker, &prefix);
    first_settings.ingest.shared_group = Some(unique("group"));
    let mut second_settings = first_settings.clone();
    second_settings.mqtt.client_id = unique("fw-ingest-b-");
    let first = RunningIngest::start(first_settings, db.store.clone()).await;
    let second = RunningIngest::start(second_settings, db.store.clone()).await;
    let mut device = Publisher::connect(&broker).await;
    let n_messages: i64 = 3000;
    for message_idx in 0..n_messages {
        let ts = now_rfc3339(chrono::Duration::milliseconds(-(n_messages - message_idx)));
        device
            .publish(
                &format!("{prefix}/S-{}/telemetry", message_idx % 17),
                format!(r#"{{"ts": "{ts}", "metrics": {{"v": {message_idx}}}}}"#),
            )
            .await;
    }
    device.flush().await;
    let pool = db.query().await;
    wait_for_count(&pool, "select count(*) from telemetry", n_messages).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&pool, "select count(*) from telemetry").await,
        n_messages
    );
    let readings = |ingest: &RunningIngest| {
        metric_value(&ingest.metrics.render(), "forewarn_ingest_readings_total")
    };
    wait_until(
        "both ingesters counted their commits",
        Duration::from_secs(5),
        || async { readings(&first) + readings(&second) >= n_messages as f64 },
    )
    .await;
    let (first_readings, second_readings) = (readings(&first), readings(&second));
    assert_eq!(
        first_readings + second_readings,
        n_messages as f64,
        "each reading stored by exactly one ingester"
    );
    assert!(
        first_readings > 0.0 && second_readings > 0.0,
        "both ingesters took a share: {first_readings} / {second_readings}"
    );
    first.stop().await;
    second.stop().await;
}

pub(crate) fn metric_value(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}
