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
    let (status, _headers, body) = request(addr, "GET", path, None).await;
    (status, body)
}

/// One HTTP/1.1 GET with an API key: the status code, the header lines (lowercased) and the
/// body.
async fn get_as(addr: SocketAddr, path: &str, key: &str) -> (u16, String, String) {
    request(addr, "GET", path, Some(&format!("Bearer {key}"))).await
}

/// One HTTP/1.1 request without a body, with this `Authorization` if any: the status code,
/// the header lines (lowercased) and the body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    stream
        .write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
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
    let key = make_key(&db.store, "admin", None).await;

    let (status, headers, body) =
        get_as(addr, &format!("/api/v1/devices/{external_id}"), &key).await;
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
    let (status, headers, body) = get_as(addr, "/api/v1/devices/NO-SUCH-DEVICE", &key).await;
    assert_eq!(status, 404);
    assert!(
        problem_of(status, &headers, &body)
            .detail
            .contains("NO-SUCH-DEVICE")
    );

    let (status, headers, body) = get_as(addr, "/api/v1/devices/bad%20id!", &key).await;
    assert_eq!(status, 422);
    assert_eq!(
        problem_of(status, &headers, &body).field.as_deref(),
        Some("external_id")
    );

    let (status, headers, body) = get_as(addr, "/api/v1/no-such-route", &key).await;
    assert_eq!(status, 404);
    problem_of(status, &headers, &body);

    let (status, headers, body) = request(
        addr,
        "DELETE",
        &format!("/api/v1/devices/{external_id}"),
        Some(&format!("Bearer {key}")),
    )
    .await;
    assert_eq!(status, 405, "{body}");
    problem_of(status, &headers, &body);

    api_store.close().await;
    let (status, headers, body) =
        get_as(addr, &format!("/api/v1/devices/{external_id}"), &key).await;
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

async fn serve(
    store: &Store,
    rate: (u32, u32),
) -> (SocketAddr, forewarn::shutdown::ShutdownTrigger) {
    let http = HttpServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_rate_limit(rate.0, rate.1);
    let addr = http.local_addr();
    let (trigger, shutdown) = Shutdown::new();
    let state = http
        .state(StageDeps {
            store: store.clone(),
            metrics: Metrics::new(),
        })
        .unwrap();
    tokio::spawn(http.serve(state, shutdown));
    (addr, trigger)
}

/// Every keyed route × every role, and every way to be refused: no key, another scheme, an
/// unknown key, a revoked one (401 problem+json with `WWW-Authenticate`); a technician's key
/// sees the devices of their jobs and no other (404, as if it did not exist). The
/// providers' inbound webhook needs no key (it is signed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_role_and_refuses_whoever_has_no_key() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    let (addr, _server) = serve(&db.store, (1000, 1000)).await;
    let customer: i64 = sqlx::query_scalar(
        "insert into customers (external_id, name) values ($1, 'C') returning id",
    )
    .bind(unique("c-"))
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut devices = Vec::new();
    for _ in 0..2 {
        let external_id = unique("DEV-");
        let id: i32 = sqlx::query_scalar(
            "insert into devices (external_id, kind, customer_id) values ($1, 'washer', $2)
             returning id",
        )
        .bind(&external_id)
        .bind(customer)
        .fetch_one(&pool)
        .await
        .unwrap();
        devices.push((external_id, id));
    }
    let technician: i32 = sqlx::query_scalar(
        "insert into technicians (external_id, name, home_latitude, home_longitude)
         values ($1, 'Tom Tech', 52.2, 21.0) returning id",
    )
    .bind(unique("t-"))
    .fetch_one(&pool)
    .await
    .unwrap();
    // The technician's job: a ticket of the first device, assigned to them.
    sqlx::query(
        "insert into tickets (kind, priority, device_id, failure_mode, opened_at, first_seen_at,
                              last_seen_at, technician_id, status)
         values ('reactive', 3, $1, 'washer/unknown', now(), now(), now(), $2, 'booked')",
    )
    .bind(devices[0].1)
    .bind(technician)
    .execute(&pool)
    .await
    .unwrap();
    let mine = format!("/api/v1/devices/{}", devices[0].0);
    let theirs = format!("/api/v1/devices/{}", devices[1].0);

    // route, role → status.
    let mut keys = Vec::new();
    for role in ["admin", "dispatcher", "integration"] {
        keys.push((role, make_key(&db.store, role, None).await));
    }
    keys.push((
        "technician",
        make_key(&db.store, "technician", Some(technician)).await,
    ));
    for (role, key) in &keys {
        for (path, expected) in [
            (&mine, 200),
            (&theirs, if *role == "technician" { 404 } else { 200 }),
        ] {
            let (status, headers, body) = get_as(addr, path, key).await;
            assert_eq!(status, expected, "{role} {path}: {body}");
            if status != 200 {
                assert!(headers.contains("application/problem+json"), "{headers}");
            }
        }
    }

    // Refused: 401 problem+json naming what is wrong, with the scheme to use.
    let revoked = make_key(&db.store, "admin", None).await;
    let revoked_id: i64 = sqlx::query_scalar("select max(id) from api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(get_as(addr, &mine, &revoked).await.0, 200);
    assert!(db.store.revoke_api_key(revoked_id).await.unwrap());
    assert!(!db.store.revoke_api_key(revoked_id).await.unwrap());
    refused_within(addr, &mine, &revoked).await;
    for authorization in [
        None,
        Some("Basic YWRtaW46YWRtaW4=".to_string()),
        Some("Bearer ".to_string()),
        Some(
            "Bearer fwk_0000000000000000000000000000000000000000000000000000000000000000"
                .to_string(),
        ),
        Some(format!("Bearer {}", "x".repeat(5000))),
        Some(format!("Bearer {revoked}")),
    ] {
        let (status, headers, body) = request(addr, "GET", &mine, authorization.as_deref()).await;
        assert_eq!(status, 401, "{authorization:?}: {body}");
        assert!(headers.contains("www-authenticate: bearer"), "{headers}");
        let problem: Problem = serde_json::from_str(&body).unwrap();
        assert_eq!(problem.status, 401);
    }
    // The inbound webhook answers to its signature, not to a key (401 here: not signed).
    let (status, _, body) = request(addr, "POST", "/api/v1/inbound/sms", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("inbound_secret") || body.contains("Forewarn-Signature"),
        "{body}"
    );

    // Use is noted (at most once a minute).
    wait_until("the key's use noted", Duration::from_secs(5), || {
        let pool = pool.clone();
        async move {
            count(
                &pool,
                "select count(*) from api_keys where last_used_at is not null",
            )
            .await
                >= 4
        }
    })
    .await;
}

/// Each key has its own rate: past its burst a key gets 429 problem+json with
/// `Retry-After`, while another key goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_is_told_when_to_retry_and_others_are_not_held_back() {
    let db = TestDb::new().await;
    let (addr, _server) = serve(&db.store, (2, 5)).await;
    db.store
        .upsert_device("RATE-DEV", "washer", None)
        .await
        .unwrap();
    let busy = make_key(&db.store, "integration", None).await;
    let calm = make_key(&db.store, "dispatcher", None).await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..12 {
        let (status, headers, body) = get_as(addr, "/api/v1/devices/RATE-DEV", &busy).await;
        statuses.push(status);
        if status == 429 && limited.is_none() {
            limited = Some((headers, body));
        }
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((5..=7).contains(&ok), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 12 - ok);
    let (headers, body) = limited.unwrap();
    assert!(headers.contains("retry-after: 1"), "{headers}");
    let problem: Problem = serde_json::from_str(&body).unwrap();
    assert_eq!(problem.status, 429);
    assert_eq!(get_as(addr, "/api/v1/devices/RATE-DEV", &calm).await.0, 200);
}

/// A revoked key is refused as soon as the server hears of it (milliseconds: the server
/// remembers keys it checked while it listens for revocations); waits at most 2 s.
async fn refused_within(addr: SocketAddr, path: &str, key: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let (status, _, body) = get_as(addr, path, key).await;
        if status == 401 {
            return;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "a revoked key still answered 2 s later"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Keys a server remembers are forgotten when a key is revoked, also when its listening
/// connection was lost just before (it reads keys from the database until it listens
/// again), and when the table is truncated; a key used while nothing changes keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_keys_are_refused_even_after_the_listener_was_lost() {
    let db = TestDb::new().await;
    let (addr, _server) = serve(&db.store, (1000, 1000)).await;
    db.store
        .upsert_device("REV-1", "washer", None)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let path = "/api/v1/devices/REV-1";
    let listener_up = || async {
        for _ in 0..200 {
            let listening: bool = sqlx::query_scalar(
                "select exists (select 1 from pg_stat_activity
                                where application_name = 'forewarn-keys' and datname = current_database())",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if listening {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the key listener never connected");
    };
    listener_up().await;
    for round in 0..3 {
        let key = make_key(&db.store, "dispatcher", None).await;
        let id: i64 = sqlx::query_scalar("select max(id) from api_keys")
            .fetch_one(&pool)
            .await
            .unwrap();
        for _ in 0..20 {
            assert_eq!(get_as(addr, path, &key).await.0, 200);
        }
        if round == 1 {
            // The listener's connection dies; the revocation's notification is lost.
            sqlx::query(
                "select pg_terminate_backend(pid) from pg_stat_activity
                 where application_name = 'forewarn-keys' and datname = current_database()",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
        assert!(db.store.revoke_api_key(id).await.unwrap());
        refused_within(addr, path, &key).await;
        // Refused for good, also once the listener is back.
        listener_up().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(get_as(addr, path, &key).await.0, 401);
    }
    // Keys wiped by a truncation are forgotten too.
    let key = make_key(&db.store, "dispatcher", None).await;
    assert_eq!(get_as(addr, path, &key).await.0, 200);
    sqlx::query("truncate api_keys")
        .execute(&pool)
        .await
        .unwrap();
    refused_within(addr, path, &key).await;
}

/// `forewarn keys`: a key made on the command line is printed once and works; listed, it
/// shows no key material; revoked, it stops working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_listed_and_revoked_on_the_command_line() {
    let db = TestDb::new().await;
    let (addr, _server) = serve(&db.store, (1000, 1000)).await;
    db.store
        .upsert_device("CLI-DEV", "washer", None)
        .await
        .unwrap();
    let forewarn = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_forewarn"))
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (code, key, stderr) = forewarn(&["keys", "create", "--role", "admin", "--name", "ops"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(key.starts_with("fwk_") && key.len() == 68, "{key}");
    assert_eq!(get_as(addr, "/api/v1/devices/CLI-DEV", &key).await.0, 200);
    let (code, _, stderr) = forewarn(&["keys", "create", "--role", "root"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not a role"), "{stderr}");
    let (code, _, stderr) = forewarn(&["keys", "create", "--role", "technician"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--technician"), "{stderr}");
    let (code, listed, _) = forewarn(&["keys", "list", "--json"]);
    assert_eq!(code, Some(0));
    let keys: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(keys[0]["name"], "ops");
    assert_eq!(keys[0]["role"], "admin");
    assert!(
        !listed.contains(&key[12..]),
        "the key itself is never listed"
    );
    let id = keys[0]["id"].as_i64().unwrap().to_string();
    let (code, _, stderr) = forewarn(&["keys", "revoke", &id]);
    assert_eq!(code, Some(0), "{stderr}");
    refused_within(addr, "/api/v1/devices/CLI-DEV", &key).await;
    let (code, _, _) = forewarn(&["keys", "revoke", &id]);
    assert_eq!(code, Some(1));
}
