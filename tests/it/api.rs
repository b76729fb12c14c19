//! The HTTP surface against the real composition (`App`: HTTP server and ingest on one
//! store), the real database and a real broker.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use forewarn::api::{ApiState, HttpServer, Problem};
use forewarn::app::{App, StageKind};
use forewarn::config::Config;
use forewarn::observability::Metrics;
use forewarn::shutdown::Shutdown;
use forewarn::stage::StageDeps;
use forewarn::store::Store;
use forewarn::store::{HEALTH_ACQUIRE_TIMEOUT, HEALTH_APPLICATION_NAME, HEALTH_MAX_CONNECTIONS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// One HTTP/1.1 GET: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _headers, body) = get_with_headers(addr, path).await;
    (status, body)
}

/// One HTTP/1.1 GET: the status code, the header lines (lowercased) and the body.
async fn get_with_headers(addr: SocketAddr, path: &str) -> (u16, String, String) {
    request(addr, "GET", path).await
}

/// One HTTP/1.1 request without a body: the status code, the header lines (lowercased) and
/// the body.
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, headers.to_ascii_lowercase(), body.to_string())
}

/// `n_probes` concurrent `/readyz` requests: each answer and the slowest one's time.
async fn probe_readyz(addr: SocketAddr, n_probes: usize) -> (Vec<(u16, String)>, Duration) {
    let probes: Vec<_> = (0..n_probes)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = get(addr, "/readyz").await;
                (answer, started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(n_probes);
    let mut slowest = Duration::ZERO;
    for probe in probes {
        let (answer, elapsed) = probe.await.unwrap();
        answers.push(answer);
        slowest = slowest.max(elapsed);
    }
    (answers, slowest)
}

fn assert_all_ready(answers: &[(u16, String)]) {
    for (status, body) in answers {
        assert_eq!(*status, 200, "{body}");
        assert!(body.contains(r#""database":"ok""#), "{body}");
    }
}

/// A flood of readiness probes never takes a connection from the store's pool, which
/// ingest commits through: with every one of the store's connections held (as by a stalled
/// write), 200 concurrent probes still answer "ready" within the probe's timeout, from at
/// most `HEALTH_MAX_CONNECTIONS` connections of their own; and while ingest stores
/// messages, 200 more probes cost it nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probes_never_starve_ingest_of_connections() {
    init_logs();
    if std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1") {
        return; // the TimescaleDB lane serves one connection in all
    }
    let db = TestDb::new().await;
    let broker = TestBroker::start(false).await;
    let prefix = unique("ready");
    let settings = ingest_settings(&broker, &prefix);
    let mut config = Config::default();
    config.http.addr = "127.0.0.1:0".parse().unwrap();
    config.mqtt = settings.mqtt.clone();
    config.ingest = settings.ingest.clone();
    config.predict.interval = None;
    let app = App::new(&config, db.store.clone()).await.unwrap();
    let addr = app.http.local_addr();
    let metrics = app.metrics.clone();
    let (trigger, shutdown) = Shutdown::new();
    let mqtt_url = broker.url();
    let running = tokio::spawn(async move {
        app.run(&config, &mqtt_url, StageKind::INGEST, shutdown)
            .await
    });
    wait_until("ingest connected", Duration::from_secs(10), || async {
        metrics.mqtt_ready() == Some(true)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Every connection of the store's pool held.
    let store_pool = db.store_pool();
    let mut held = Vec::new();
    for _ in 0..store_pool.options().get_max_connections() {
        held.push(store_pool.acquire().await.unwrap());
    }
    let (answers, slowest) = probe_readyz(addr, 200).await;
    assert_all_ready(&answers);
    assert!(
        slowest < HEALTH_ACQUIRE_TIMEOUT,
        "slowest probe took {slowest:?}"
    );
    let check = db.query().await;
    let health_connections: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity
         where application_name = $1 and datname = current_database()",
    )
    .bind(HEALTH_APPLICATION_NAME)
    .fetch_one(&check)
    .await
    .unwrap();
    assert!(
        (1..=i64::from(HEALTH_MAX_CONNECTIONS)).contains(&health_connections),
        "{health_connections} probe connections"
    );
    drop(held);

    // Probes while ingest stores: every message lands, no write fails.
    let mut device = Publisher::connect(&broker).await;
    let probing = tokio::spawn(probe_readyz(addr, 200));
    let n_messages: i64 = 500;
    for message_idx in 0..n_messages {
        let ts = now_rfc3339(chrono::Duration::milliseconds(-(n_messages - message_idx)));
        device
            .publish(
                &format!("{prefix}/R-{}/telemetry", message_idx % 7),
                format!(r#"{{"ts": "{ts}", "metrics": {{"v": {message_idx}}}}}"#),
            )
            .await;
    }
    device.flush().await;
    let (answers, _) = probing.await.unwrap();
    assert_all_ready(&answers);
    wait_for_count(&check, "select count(*) from telemetry", n_messages).await;
    assert_eq!(metrics.ingest_failure(), None);

    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("forewarn stops")
        .unwrap()
        .unwrap();
    check.close().await;
    db.store.close().await;
}

/// The API's errors are one problem+json answer each: rejected input names its field
/// (422), an unknown device or route is 404, and a store that is down is 503 with
/// `Retry-After` — never a 500 and never an HTML page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_problem_json_with_the_status_of_their_class() {
    init_logs();
    let db = TestDb::new().await;
    let external_id = unique("API-DEV-");
    db.store
        .upsert_device(&external_id, "washer", Some("WX-1"))
        .await
        .unwrap();
    // A store of its own, so that closing it (the database "down") leaves the suite's alone.
    let api_store = Store::connect(
        &db.url,
        &Config::default().database,
        &Config::default().storage,
    )
    .await
    .unwrap();
    let http = HttpServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = http.local_addr();
    let (trigger, shutdown) = Shutdown::new();
    let state = ApiState::new(StageDeps {
        store: api_store.clone(),
        metrics: Metrics::new(),
    });
    let serving = tokio::spawn(http.serve(state, shutdown));

    let (status, headers, body) =
        get_with_headers(addr, &format!("/api/v1/devices/{external_id}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    let device: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(device["external_id"], external_id.as_str());
    assert_eq!(device["kind"], "washer");

    let problem_of = |status: u16, headers: &str, body: &str| -> Problem {
        assert!(
            headers.contains("content-type: application/problem+json"),
            "{status}: {headers}"
        );
        let problem: Problem = serde_json::from_str(body).unwrap();
        assert_eq!(problem.status, status, "{body}");
        problem
    };
    let (status, headers, body) = get_with_headers(addr, "/api/v1/devices/NO-SUCH-DEVICE").await;
    assert_eq!(status, 404);
    assert!(
        problem_of(status, &headers, &body)
            .detail
            .contains("NO-SUCH-DEVICE")
    );

    let (status, headers, body) = get_with_headers(addr, "/api/v1/devices/bad%20id!").await;
    assert_eq!(status, 422);
    assert_eq!(
        problem_of(status, &headers, &body).field.as_deref(),
        Some("external_id")
    );

    let (status, headers, body) = get_with_headers(addr, "/api/v1/no-such-route").await;
    assert_eq!(status, 404);
    problem_of(status, &headers, &body);

    let (status, headers, body) =
        request(addr, "DELETE", &format!("/api/v1/devices/{external_id}")).await;
    assert_eq!(status, 405, "{body}");
    problem_of(status, &headers, &body);

    api_store.close().await;
    let (status, headers, body) =
        get_with_headers(addr, &format!("/api/v1/devices/{external_id}")).await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains("retry-after: 5"), "{headers}");
    problem_of(status, &headers, &body);

    trigger.trigger();
    serving.await.unwrap().unwrap();
    db.store.close().await;
}

/// `forewarn predict` is the stage list without ingest: it starts no broker (none is
/// configured and none is needed), answers ready, registers the shipped model and scores,
/// and stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forewarn_predict_runs_scoring_without_a_broker() {
    init_logs();
    if std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1") {
        return; // the process needs connections of its own
    }
    let db = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_forewarn"))
        .arg("predict")
        .env("DATABASE_URL", &db.url)
        .env_remove("MQTT_URL")
        .env("FOREWARN_HTTP_ADDR", addr.to_string())
        .env("FOREWARN_PREDICT__INTERVAL", "1s")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let last = std::sync::Arc::new(std::sync::Mutex::new((0, String::new())));
    wait_until("forewarn predict ready", Duration::from_secs(30), || {
        let last = last.clone();
        async move {
            let answer = match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => get(addr, "/readyz").await,
                Err(_) => (0, String::new()),
            };
            let ready = answer.0 == 200;
            *last.lock().unwrap() = answer;
            ready
        }
    })
    .await;
    let last = last.lock().unwrap().clone();
    assert!(last.1.contains(r#""broker":"not used""#), "{}", last.1);
    let pool = db.store_pool().clone();
    wait_until(
        "the shipped model registered",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("select count(*) from models where active")
                    .fetch_one(&pool)
                    .await
                    .is_ok_and(|n| n > 0)
            }
        },
    )
    .await;
    // Operable like its peers: build, process and stage metrics under Prometheus' names.
    wait_until(
        "a scoring cycle counted",
        Duration::from_secs(30),
        || async {
            get(addr, "/metrics")
                .await
                .1
                .contains(r#"forewarn_predict_cycles_total{outcome="ok"}"#)
        },
    )
    .await;
    let (_, exposition) = get(addr, "/metrics").await;
    for name in [
        "forewarn_build_info{version=\"",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "forewarn_predict_cycle_seconds_count ",
        "forewarn_predict_last_cycle_predictions ",
        "forewarn_predict_model_info{failure_mode=\"",
        "forewarn_predict_stale_devices ",
    ] {
        assert!(
            exposition.contains(name),
            "{name} missing from:\n{exposition}"
        );
    }
    // `forewarn healthcheck` (the containers' probe) agrees, also given the wildcard
    // address the process would listen on in a container.
    let healthcheck = |listen: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_forewarn"))
            .arg("healthcheck")
            .env("FOREWARN_HTTP_ADDR", listen)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    for listen in [addr.to_string(), format!("0.0.0.0:{port}")] {
        let output = healthcheck(listen.clone());
        assert!(
            output.status.success(),
            "{listen}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).starts_with("ready: "));
    }
    sigterm(&process);
    let status = process.wait().unwrap();
    assert!(status.success(), "SIGTERM gives a clean exit: {status}");
    let output = healthcheck(addr.to_string());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "nothing listens any more");
    assert!(
        stderr.contains("nothing answers on") && !stderr.contains("panicked"),
        "{stderr}"
    );
    db.store.close().await;
}
