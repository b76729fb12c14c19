//! The hostile cases of ingest: a broker backlog far beyond any window, shutdown in every
//! state, oversized packets, non-data database failures, registration floods, retained
//! status, and several sessions. Each runs against a private Mosquitto and real PostgreSQL.

use std::time::{Duration, Instant};

use forewarn::embedded::mosquitto::Mosquitto;
use forewarn::ingest::IngestDeps;
use forewarn::loadgen::{self, LoadSpec};
use forewarn::observability::Metrics;
use forewarn::shutdown::Shutdown;
use sqlx::Row;

use crate::support::*;

/// Peak resident memory of this test process (nextest runs each test in its own).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn metric(metrics: &Metrics, name: &str) -> f64 {
    let exposition = metrics.render();
    exposition
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// Publishes `n_messages` of 3 readings each from `devices` devices, QoS 1, as fast as
/// the broker takes them, and waits until the broker has acknowledged all of them.
async fn flood(url: &str, prefix: &str, devices: usize, n_messages: u64) {
    let spec = LoadSpec {
        devices,
        metrics_per_message: 3,
        total_messages: Some(n_messages),
        topic_prefix: prefix.to_string(),
        connections: 4,
        ..LoadSpec::default()
    };
    let (_stop, shutdown) = Shutdown::new();
    let report = loadgen::publish(url, &spec, shutdown)
        .await
        .expect("publish");
    assert_eq!(report.readings, n_messages * 3);
}

/// The backlog a persistent session receives after a restart or an outage, far beyond
/// the broker's in-flight window and ingest's own limits: with the default configuration
/// it drains completely, exactly once, with memory bounded by ingest's limits.
async fn backlog_drains(window: u16, n_messages: u64) {
    init_logs();
    let db = TestDb::new().await;
    let mosquitto = Mosquitto::start(window).expect("mosquitto");
    let broker = TestBroker::Mosquitto(mosquitto);
    let prefix = unique("backlog");
    let mut settings = ingest_settings(&broker, &prefix);
    settings.ingest = forewarn::config::IngestConfig::default();
    // Create the persistent session, then go away: what follows queues at the broker.
    let first = RunningIngest::start(settings.clone(), db.store.clone()).await;
    first.stop().await;
    flood(&broker.device_url(), &prefix, 1000, n_messages).await;

    let started = Instant::now();
    let ingest = RunningIngest::start(settings.clone(), db.store.clone()).await;
    let pool = db.query().await;
    let expected = (n_messages * 3) as i64;
    let mut max_pending = 0.0f64;
    loop {
        max_pending = max_pending.max(metric(&ingest.metrics, "forewarn_ingest_pending_messages"));
        if count(&pool, "select count(*) from telemetry").await >= expected {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "backlog not drained in 120 s: {} of {expected} readings, pending {}",
            count(&pool, "select count(*) from telemetry").await,
            metric(&ingest.metrics, "forewarn_ingest_pending_messages"),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&pool, "select count(*) from telemetry").await,
        expected,
        "every reading exactly once"
    );
    assert!(
        max_pending <= settings.ingest.max_pending_messages as f64,
        "held {max_pending} messages, limit {}",
        settings.ingest.max_pending_messages
    );
    let stop_started = Instant::now();
    ingest.stop().await;
    assert!(stop_started.elapsed() < Duration::from_secs(10));
    let peak = peak_rss_mib();
    eprintln!(
        "window {window}: {n_messages} messages drained in {drained:?}, max pending {max_pending}, peak RSS {peak:.0} MiB"
    );
    assert!(peak < 300.0, "peak RSS {peak:.0} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_drains_with_a_wide_broker_window() {
    backlog_drains(1000, 100_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_drains_with_mosquittos_default_window() {
    backlog_drains(20, 100_000).await;
}

/// A limit far below the backlog: the session stops reading, keeps acking, and still
/// stores everything exactly once; what it holds never passes its limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_pauses_at_the_pending_limit_and_resumes() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::Mosquitto(Mosquitto::start(1000).expect("mosquitto"));
    let prefix = unique("pause");
    let mut settings = ingest_settings(&broker, &prefix);
    settings.ingest.max_pending_messages = 300;
    settings.ingest.max_pending_bytes = 200 * 1024;
    settings.ingest.batch_max_readings = 200;
    let first = RunningIngest::start(settings.clone(), db.store.clone()).await;
    first.stop().await;
    flood(&broker.device_url(), &prefix, 100, 20_000).await;
    let ingest = RunningIngest::start(settings.clone(), db.store.clone()).await;
    let pool = db.query().await;
    let (mut max_messages, mut max_bytes) = (0.0f64, 0.0f64);
    let started = Instant::now();
    while count(&pool, "select count(*) from telemetry").await < 60_000 {
        max_messages =
            max_messages.max(metric(&ingest.metrics, "forewarn_ingest_pending_messages"));
        max_bytes = max_bytes.max(metric(&ingest.metrics, "forewarn_ingest_pending_bytes"));
        assert!(started.elapsed() < Duration::from_secs(60), "not drained");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&pool, "select count(*) from telemetry").await, 60_000);
    assert!(metric(&ingest.metrics, "forewarn_ingest_read_pauses_total") >= 1.0);
    // The poller stops reading at the limit; rumqttc may have parsed up to 10 packets
    // of its last read already.
    assert!(max_messages <= 300.0 + 10.0, "held {max_messages} messages");
    assert!(
        max_bytes <= 200.0 * 1024.0 + 10.0 * 1024.0,
        "held {max_bytes} bytes"
    );
    ingest.stop().await;
}

/// SIGTERM ends `forewarn ingest` within 10 s while it drains a backlog, and what it
/// had not committed comes back after a restart: nothing lost, nothing doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_backlog_stops_promptly_and_loses_nothing() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::Mosquitto(Mosquitto::start(1000).expect("mosquitto"));
    let prefix = unique("term");
    let client_id = unique("fw-term-");
    let spawn = || spawn_ingest(&db.url, &broker.url(), &client_id, &prefix);
    let pool = db.query().await;
    let mut process = spawn();
    // Long enough to connect and subscribe: the persistent session now exists.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sigterm(&process);
    assert!(process.wait().unwrap().success());
    flood(&broker.device_url(), &prefix, 500, 100_000).await;

    process = spawn();
    wait_until("draining started", Duration::from_secs(20), || async {
        count(&pool, "select count(*) from telemetry").await > 0
    })
    .await;
    let stopping = Instant::now();
    sigterm(&process);
    let status = process.wait().unwrap();
    assert!(status.success(), "clean exit: {status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        stopping.elapsed()
    );
    let stored = count(&pool, "select count(*) from telemetry").await;
    assert!(stored < 300_000, "stopped before the end ({stored})");

    process = spawn();
    wait_for_count(&pool, "select count(*) from telemetry", 300_000).await;
    sigterm(&process);
    assert!(process.wait().unwrap().success());
}

/// Shutdown with the database down, and with the broker down: both within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_with_the_database_or_the_broker_down() {
    init_logs();
    if std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1") {
        return; // the outage needs a cluster this test owns
    }
    let owned = OwnedCluster::start().await;
    let cluster = owned.cluster.clone();
    let db = TestDb::on(&cluster.url("postgres"), false).await;
    let broker = TestBroker::Mosquitto(Mosquitto::start(1000).expect("mosquitto"));
    let prefix = unique("down");
    let ingest = RunningIngest::start(ingest_settings(&broker, &prefix), db.store.clone()).await;
    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop().unwrap())
        .await
        .unwrap();
    flood(&broker.device_url(), &prefix, 50, 2000).await;
    // The pool waits up to its acquire timeout (10 s) before it reports the failure.
    wait_until(
        "failing writes show in /readyz",
        Duration::from_secs(20),
        || async { ingest.metrics.ingest_failure().is_some() },
    )
    .await;
    let started = Instant::now();
    ingest.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Broker down: the session is reconnecting when the signal comes.
    let restart = cluster.clone();
    tokio::task::spawn_blocking(move || restart.restart().unwrap())
        .await
        .unwrap();
    let ingest = RunningIngest::start(ingest_settings(&broker, &prefix), db.store.clone()).await;
    drop(broker); // kills Mosquitto
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    ingest.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    db.store.close().await;
    drop(owned);
}

/// A packet over the limit is refused by the broker (whose limit agrees with ingest's),
/// so it never reaches ingest; the next valid message is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packet_does_not_wedge_ingest() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::Mosquitto(Mosquitto::start(1000).expect("mosquitto"));
    let prefix = unique("huge");
    let ingest = RunningIngest::start(ingest_settings(&broker, &prefix), db.store.clone()).await;
    // A device that sends 17 MiB in one publish.
    let url = url::Url::parse(&broker.url()).unwrap();
    let mut options = rumqttc::MqttOptions::new(
        unique("fw-huge-"),
        url.host_str().unwrap(),
        url.port().unwrap(),
    );
    options.set_max_packet_size(32 << 20, 32 << 20);
    let (client, mut event_loop) = rumqttc::AsyncClient::new(options, 10);
    let huge = vec![b'x'; 17 << 20];
    client
        .publish(
            format!("{prefix}/BIG-1/telemetry"),
            rumqttc::QoS::AtLeastOnce,
            false,
            huge,
        )
        .await
        .unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if event_loop.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "the broker drops a client that sends 17 MiB"
    );
    let mut device = Publisher::connect(&broker).await;
    let ts = now_rfc3339(chrono::Duration::seconds(-1));
    device
        .publish(
            &format!("{prefix}/OK-1/telemetry"),
            format!(r#"{{"ts": "{ts}", "metrics": {{"a": 1}}}}"#),
        )
        .await;
    device.flush().await;
    let pool = db.query().await;
    wait_for_count(&pool, "select count(*) from telemetry", 1).await;
    ingest.stop().await;
}

/// A failure that is not the data's fault (here: the database turns read-only, SQLSTATE
/// 25006, as after a failover) dead-letters nothing: ingest holds the messages, shows the
/// failure in /readyz, and stores them once the database takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_dead_letters_nothing() {
    init_logs();
    if std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1") {
        return; // needs its own database to make read-only
    }
    let db = TestDb::new().await;
    let broker = TestBroker::Mosquitto(Mosquitto::start(1000).expect("mosquitto"));
    let prefix = unique("ro");
    let settings = ingest_settings(&broker, &prefix);
    let ingest = RunningIngest::start(settings, db.store.clone()).await;
    let pool = db.query().await;
    let mut device = Publisher::connect(&broker).await;
    // Register the device first, so that the refusal comes from the batch write.
    let ts = now_rfc3339(chrono::Duration::seconds(-10));
    device
        .publish(
            &format!("{prefix}/RO-1/telemetry"),
            format!(r#"{{"ts": "{ts}", "metrics": {{"a": 0}}}}"#),
        )
        .await;
    device.flush().await;
    wait_for_count(&pool, "select count(*) from telemetry", 1).await;

    // One connection of the test's own, which the terminations below spare.
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    async fn read_only(admin: &mut sqlx::PgConnection, on: bool) {
        let database: String = sqlx::query_scalar("select current_database()")
            .fetch_one(&mut *admin)
            .await
            .unwrap();
        let statement = if on {
            format!("alter database \"{database}\" set default_transaction_read_only = on")
        } else {
            format!("alter database \"{database}\" reset default_transaction_read_only")
        };
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *admin)
            .await
            .unwrap();
        // Existing sessions keep their setting: make every other one reconnect.
        sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()")
            .execute(&mut *admin)
            .await
            .unwrap();
    }
    read_only(&mut admin, true).await;
    for n in 1..=20 {
        let ts = now_rfc3339(
            chrono::Duration::seconds(-9 + n / 10) + chrono::Duration::milliseconds(n * 20),
        );
        device
            .publish(
                &format!("{prefix}/RO-1/telemetry"),
                format!(r#"{{"ts": "{ts}", "metrics": {{"a": {n}}}}}"#),
            )
            .await;
    }
    device.flush().await;
    wait_until("the failure shows", Duration::from_secs(10), || async {
        ingest.metrics.ingest_failure().is_some()
    })
    .await;
    let pool = db.query().await;
    assert_eq!(count(&pool, "select count(*) from dead_letters").await, 0);
    read_only(&mut admin, false).await;
    let pool = db.query().await;
    wait_for_count(&pool, "select count(*) from telemetry", 21).await;
    assert_eq!(count(&pool, "select count(*) from dead_letters").await, 0);
    wait_until("healthy again", Duration::from_secs(10), || async {
        ingest.metrics.ingest_failure().is_none()
    })
    .await;
    ingest.stop().await;
}

/// Registration looks up before it inserts: resolving known names again and again spends
/// no sequence values (`metrics.id` is a smallint), and a flood of new devices is held to
/// the configured rate, the rest dead-lettered with a reason of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_spends_no_ids_on_known_names_and_is_rate_limited() {
    init_logs();
    let db = TestDb::new().await;
    let names: Vec<String> = (0..50).map(|n| format!("metric_{n}")).collect();
    for _ in 0..20 {
        db.store.resolve_metrics(&names, true).await.unwrap();
    }
    let pool = db.query().await;
    let highest: i64 = sqlx::query_scalar("select last_value from metrics_id_seq")
        .fetch_one(&pool)
        .await
        .unwrap();
    let existing = count(&pool, "select count(*) from metrics").await;
    assert!(
        highest <= existing,
        "sequence at {highest} for {existing} metrics"
    );

    let broker = TestBroker::start(false).await;
    let prefix = unique("reg");
    let mut settings = ingest_settings(&broker, &prefix);
    settings.ingest.max_new_devices_per_minute = 5;
    let ingest = RunningIngest::start(settings, db.store.clone()).await;
    let mut device = Publisher::connect(&broker).await;
    let ts = now_rfc3339(chrono::Duration::seconds(-1));
    for n in 0..12 {
        device
            .publish(
                &format!("{prefix}/NEW-{n}/telemetry"),
                format!(r#"{{"ts": "{ts}", "metrics": {{"a": {n}}}}}"#),
            )
            .await;
    }
    device.flush().await;
    wait_for_count(&pool, "select count(*) from telemetry", 5).await;
    wait_for_count(
        &pool,
        "select count(*) from dead_letters where reason = 'registration_limited'",
        7,
    )
    .await;
    ingest.stop().await;
}

/// Retained status replayed by the broker on every subscribe is not news: it does not
/// move `last_seen_at`, and it does not overwrite a newer live status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_status_does_not_move_last_seen_or_override_newer_status() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::Mosquitto(Mosquitto::start(1000).expect("mosquitto"));
    let prefix = unique("ret");
    let settings = ingest_settings(&broker, &prefix);
    let ingest = RunningIngest::start(settings.clone(), db.store.clone()).await;
    let mut device = Publisher::connect(&broker).await;
    let reading_time = chrono::Utc::now() - chrono::Duration::hours(2);
    device
        .publish(
            &format!("{prefix}/ST-1/telemetry"),
            format!(
                r#"{{"ts": "{}", "metrics": {{"a": 1}}}}"#,
                reading_time.to_rfc3339()
            ),
        )
        .await;
    device
        .publish_retained(&format!("{prefix}/ST-1/status"), "online")
        .await;
    device.flush().await;
    let pool = db.query().await;
    wait_for_count(&pool, "select count(*) from telemetry", 1).await;
    // last_seen_at is committed with the batch, not held in memory.
    let last_seen = || async {
        sqlx::query("select last_seen_at, online from devices where external_id = 'ST-1'")
            .fetch_one(&pool)
            .await
            .map(|row| {
                (
                    row.get::<Option<chrono::DateTime<chrono::Utc>>, _>(0),
                    row.get::<Option<bool>, _>(1),
                )
            })
            .unwrap()
    };
    wait_until("status applied", Duration::from_secs(10), || async {
        last_seen().await.1 == Some(true)
    })
    .await;
    // The live status (not retained on the wire to ingest) counts as seen now.
    let (seen_after_live, _) = last_seen().await;
    // The device goes offline (live, newer); then ingest restarts and the broker replays
    // the retained "online".
    device
        .publish(&format!("{prefix}/ST-1/status"), "offline")
        .await;
    device.flush().await;
    wait_until("offline applied", Duration::from_secs(10), || async {
        last_seen().await.1 == Some(false)
    })
    .await;
    let (seen_before_restart, _) = last_seen().await;
    ingest.stop().await;
    let ingest = RunningIngest::start(settings, db.store.clone()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (seen_after_restart, online) = last_seen().await;
    assert_eq!(online, Some(false), "the retained replay does not override");
    assert_eq!(
        seen_after_restart, seen_before_restart,
        "nor moves last_seen_at"
    );
    assert!(seen_after_live.is_some());
    ingest.stop().await;
}

/// Several sessions in one process: each reports its own connection, and `/readyz`
/// needs all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_reports_its_own_connection() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::Mosquitto(Mosquitto::start(1000).expect("mosquitto"));
    let prefix = unique("sessions");
    let mut settings = ingest_settings(&broker, &prefix);
    settings.ingest.sessions = 3;
    let deps = IngestDeps::new(db.store.clone(), Metrics::new());
    let ingest = RunningIngest::start_with(settings, deps).await;
    assert_eq!(
        metric(&ingest.metrics, "forewarn_ingest_mqtt_sessions_connected"),
        3.0
    );
    flood(&broker.device_url(), &prefix, 30, 3000).await;
    let pool = db.query().await;
    wait_for_count(&pool, "select count(*) from telemetry", 9000).await;
    drop(broker);
    wait_until(
        "all sessions see the broker go",
        Duration::from_secs(10),
        || async { metric(&ingest.metrics, "forewarn_ingest_mqtt_sessions_connected") == 0.0 },
    )
    .await;
    assert_eq!(ingest.metrics.mqtt_ready(), Some(false));
    ingest.stop().await;
}

/// Messages without `ts` are stamped with their receive time, which a redelivery does not
/// share. The ingester commits and dies before acking; the broker redelivers with the DUP
/// flag, and nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_messages_without_ts_are_stored_once() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::Mosquitto(Mosquitto::start(1000).expect("mosquitto"));
    let prefix = unique("nots");
    let settings = ingest_settings(&broker, &prefix);
    let deps = IngestDeps {
        crash_after_commits: Some(std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1))),
        ..IngestDeps::new(db.store.clone(), Metrics::new())
    };
    let crashing = RunningIngest::start_with(settings.clone(), deps).await;
    let mut device = Publisher::connect(&broker).await;
    for n in 0..300 {
        device
            .publish(
                &format!("{prefix}/NT-{}/telemetry", n % 3),
                format!(r#"{{"metrics": {{"a": {n}}}}}"#),
            )
            .await;
        if n % 15 == 0 {
            device
                .publish(
                    &format!("{prefix}/NT-{}/events", n % 3),
                    format!(r#"{{"code": "E{n}", "severity": "info"}}"#),
                )
                .await;
        }
    }
    device.flush().await;
    crashing.join().await;
    let pool = db.query().await;
    assert!(count(&pool, "select count(*) from telemetry").await > 0);
    let restarted = RunningIngest::start(settings, db.store.clone()).await;
    wait_for_count(&pool, "select count(*) from telemetry", 300).await;
    wait_for_count(&pool, "select count(*) from device_events", 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&pool, "select count(*) from telemetry").await, 300);
    assert_eq!(count(&pool, "select count(*) from device_events").await, 20);
    assert!(
        metric(
            &restarted.metrics,
            "forewarn_ingest_duplicate_readings_total"
        ) >= 1.0,
        "the committed batch came back and was recognised"
    );
    restarted.stop().await;
}

/// A reconnect while a batch is committing: the broker takes the session away (another
/// client connects with ingest's client id), ingest reconnects and the broker resends what
/// was not acknowledged. The batch of the first connection commits afterwards; its acks
/// belong to a connection that is gone and are dropped (a broker that renumbers packet ids
/// would take them for other messages), the resent copies are recognised and acknowledged
/// on the new connection. Nothing is lost, nothing doubled, nothing left unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_of_a_lost_connection_are_dropped_and_nothing_is_lost() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::Mosquitto(Mosquitto::start(1000).expect("mosquitto"));
    let prefix = unique("stale");
    let settings = ingest_settings(&broker, &prefix);
    let ingest = RunningIngest::start(settings.clone(), db.store.clone()).await;
    let pool = db.query().await;
    let mut device = Publisher::connect(&broker).await;
    let topic = format!("{prefix}/ST-1/telemetry");
    let ts = now_rfc3339(chrono::Duration::seconds(-30));
    device
        .publish(
            &topic,
            format!(r#"{{"ts": "{ts}", "metrics": {{"a": 0}}}}"#),
        )
        .await;
    device.flush().await;
    wait_for_count(&pool, "select count(*) from telemetry", 1).await;

    // Hold the batch's commit: the table is locked by a transaction of the test's own.
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::query("begin").execute(&mut admin).await.unwrap();
    sqlx::query("lock table telemetry in exclusive mode")
        .execute(&mut admin)
        .await
        .unwrap();
    for n in 1..=20 {
        let ts = now_rfc3339(chrono::Duration::seconds(-20 + n));
        device
            .publish(
                &topic,
                format!(r#"{{"ts": "{ts}", "metrics": {{"a": {n}}}}}"#),
            )
            .await;
    }
    device.flush().await;
    wait_until("the batch is held", Duration::from_secs(10), || async {
        metric(&ingest.metrics, "forewarn_ingest_pending_messages") >= 20.0
    })
    .await;

    // Take the session away: a client with ingest's id and manual acks (it must not
    // acknowledge what the broker resends to it), gone after its CONNACK.
    let url = url::Url::parse(&broker.url()).unwrap();
    let mut options = rumqttc::MqttOptions::new(
        settings.mqtt.client_id.clone(),
        url.host_str().unwrap(),
        url.port().unwrap(),
    );
    options.set_clean_session(false).set_manual_acks(true);
    let (_client, mut intruder) = rumqttc::AsyncClient::new(options, 10);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) =
                intruder.poll().await.expect("intruder connects")
            {
                break;
            }
        }
    })
    .await
    .expect("intruder connected");
    drop(intruder);
    wait_until("ingest reconnected", Duration::from_secs(10), || async {
        metric(
            &ingest.metrics,
            "forewarn_ingest_mqtt_connection_errors_total",
        ) >= 1.0
            && ingest.metrics.mqtt_ready() == Some(true)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    sqlx::query("rollback").execute(&mut admin).await.unwrap();
    wait_for_count(&pool, "select count(*) from telemetry", 21).await;
    wait_until(
        "the resent copies are settled",
        Duration::from_secs(10),
        || async { metric(&ingest.metrics, "forewarn_ingest_pending_messages") == 0.0 },
    )
    .await;
    assert!(
        metric(&ingest.metrics, "forewarn_ingest_stale_acks_dropped_total") >= 1.0,
        "the first connection's acks were dropped"
    );
    assert!(
        metric(&ingest.metrics, "forewarn_ingest_duplicate_readings_total") >= 1.0,
        "the resent copies were recognised"
    );
    ingest.stop().await;

    // Everything was acknowledged on the second connection: a new run of the same session
    // receives nothing again.
    let again = RunningIngest::start(settings, db.store.clone()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        metric(&again.metrics, "forewarn_ingest_duplicate_readings_total"),
        0.0,
        "nothing was left unacknowledged"
    );
    assert_eq!(count(&pool, "select count(*) from telemetry").await, 21);
    again.stop().await;
}

/// A replica scaled down for good: with MQTT v5 its session expires after
/// `mqtt.session_expiry`, and from then on every message of the shared subscription goes
/// to the replica that is left, which commits it. Before the expiry the broker still queues
/// the gone member's share for it (what a session that never expires would do forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_gone_for_good_stops_receiving_its_share_after_its_session_expires() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::Mosquitto(Mosquitto::start(1000).expect("mosquitto"));
    let prefix = unique("expiry");
    let group = unique("ingest");
    let replica = |session_expiry| {
        let mut settings = ingest_settings(&broker, &prefix);
        settings.ingest.shared_group = Some(group.clone());
        settings.mqtt.session_expiry = session_expiry;
        assert_eq!(settings.mqtt.protocol, forewarn::config::MqttProtocol::V5);
        settings
    };
    let stays = RunningIngest::start(replica(Duration::from_secs(3600)), db.store.clone()).await;
    let expiry = Duration::from_secs(3);
    let goes = RunningIngest::start(replica(expiry), db.store.clone()).await;
    let pool = db.query().await;
    let readings = "select count(*) from telemetry";

    // Both members take a share, and all of it is committed.
    flood(&broker.device_url(), &prefix, 20, 400).await;
    wait_for_count(&pool, readings, 1200).await;

    // One member stops for good. Within its expiry the broker still gives it a share,
    // which waits in its session: the one left receives only part of the stream.
    goes.stop().await;
    let stopped = Instant::now();
    flood(&broker.device_url(), &prefix, 20, 400).await;
    assert!(stopped.elapsed() < expiry, "published within the expiry");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_expiry = count(&pool, readings).await - 1200;
    assert!(
        (0..1200).contains(&before_expiry),
        "the gone member's share waits for it until its session expires ({before_expiry} of 1200 committed)"
    );

    // After the expiry every new message reaches the member that is left and is committed.
    tokio::time::sleep((expiry + Duration::from_secs(2)).saturating_sub(stopped.elapsed())).await;
    let after_expiry = count(&pool, readings).await;
    flood(&broker.device_url(), &prefix, 20, 400).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&pool, readings).await < after_expiry + 1200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(&pool, readings).await,
        after_expiry + 1200,
        "every message after the expiry is committed by the replica that is left"
    );
    stays.stop().await;
}

/// Two processes configured with the same client id take the session from each other on
/// every connect (MQTT v5 "session taken over"). Each reconnect waits its backoff, which
/// grows while connections keep failing soon after CONNACK: a few attempts, not a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_over_again_and_again_reconnects_with_backoff() {
    init_logs();
    let db = TestDb::new().await;
    let broker = TestBroker::Mosquitto(Mosquitto::start(1000).expect("mosquitto"));
    let settings = ingest_settings(&broker, &unique("takeover"));
    let first = RunningIngest::start(settings.clone(), db.store.clone()).await;
    let (stop, shutdown) = Shutdown::new();
    let second_metrics = Metrics::new();
    let second = tokio::spawn(forewarn::ingest::run(
        settings,
        IngestDeps::new(db.store.clone(), second_metrics.clone()),
        shutdown,
    ));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let errors = metric(
        &first.metrics,
        "forewarn_ingest_mqtt_connection_errors_total",
    ) + metric(
        &second_metrics,
        "forewarn_ingest_mqtt_connection_errors_total",
    );
    eprintln!("{errors} connection errors in 6 s");
    assert!(
        errors >= 2.0,
        "the two sessions did take each other over ({errors})"
    );
    // Backoff 0.1, 0.2, 0.4 … 3.2 s: at most ~6 failures each in 6 s.
    assert!(
        errors <= 16.0,
        "{errors} connection errors in 6 s: reconnecting in a loop"
    );
    stop.trigger();
    second.await.unwrap().unwrap();
    first.stop().await;
}
