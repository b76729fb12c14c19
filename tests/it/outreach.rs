//! The outreach stage against real peers: PostgreSQL, an SMTP server (aiosmtpd, from PyPI,
//! in its own process) and an HTTP server standing in for the SMS provider (axum on
//! loopback, answering what each test tells it to). They check what the customer
//! receives (language, time zone, both MIME parts), retries on a provider's 5xx, fallback
//! to the next channel, quiet hours, and that a worker killed between sending and writing
//! sends nothing twice and loses nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use forewarn::api::inbound::verify;
use forewarn::outreach::channels::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, signature, unix_seconds};
use forewarn::outreach::{Outreach, OutreachConfig, Secret};
use forewarn::store::CustomerRow;

use crate::support::*;

pub(crate) const SECRET: &str = "outreach-test-secret-0123456789";

/// An SMTP server in its own process, writing what it accepts to a JSON-lines file.
pub(crate) struct SmtpSink {
    pub(crate) port: u16,
    out: std::path::PathBuf,
    child: std::process::Child,
}

impl SmtpSink {
    pub(crate) fn start() -> SmtpSink {
        let python = python_venv("aiosmtpd==1.4.6");
        let port = free_port();
        let out = std::env::temp_dir()
            .join(unique("forewarn-smtp-"))
            .with_extension("jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/smtp_sink.py");
        let mut child = std::process::Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(&out)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the SMTP sink starts");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
        SmtpSink { port, out, child }
    }

    pub(crate) fn received(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the stand-in provider received, and how it answers.
#[derive(Default)]
pub(crate) struct ProviderState {
    /// Every request: (path, idempotency key, body), in order.
    pub(crate) requests: Vec<(String, String, serde_json::Value)>,
    pub(crate) bad_signatures: usize,
    /// Per path: answer this status to the first `n` requests, then 202.
    fail_first: HashMap<String, (usize, u16)>,
    pub(crate) delay: Duration,
    /// Up to this much more per request (spread by the request's key), so that sends of a
    /// batch finish at different times.
    pub(crate) jitter: Duration,
}

/// A stand-in SMS/push/webhook provider on loopback: checks every signature, keeps every
/// request with its idempotency key.
#[derive(Clone)]
pub(crate) struct Provider {
    addr: SocketAddr,
    pub(crate) state: Arc<Mutex<ProviderState>>,
}

impl Provider {
    pub(crate) async fn start() -> Provider {
        let state = Arc::new(Mutex::new(ProviderState::default()));
        let app = axum::Router::new()
            .route("/{channel}", axum::routing::post(provider_receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider { addr, state }
    }

    pub(crate) fn url(&self, channel: &str) -> String {
        format!("http://{}/{channel}", self.addr)
    }

    pub(crate) fn requests(&self, path: &str) -> Vec<(String, serde_json::Value)> {
        let state = self.state.lock().unwrap();
        state
            .requests
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, k, b)| (k.clone(), b.clone()))
            .collect()
    }
}

async fn provider_receive(
    State(state): State<Arc<Mutex<ProviderState>>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let (delay, jitter) = {
        let state = state.lock().unwrap();
        (state.delay, state.jitter)
    };
    let spread = headers
        .get(IDEMPOTENCY_HEADER)
        .map(|k| {
            k.as_bytes()
                .iter()
                .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(*b))
        })
        .unwrap_or(0);
    let extra = if jitter.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_millis(spread % (jitter.as_millis() as u64 + 1))
    };
    tokio::time::sleep(delay + extra).await;
    let key = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let signed = verify(
        headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()),
        SECRET,
        &body,
        unix_seconds(),
    )
    .is_ok();
    let mut state = state.lock().unwrap();
    if !signed {
        state.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let seen = state
        .requests
        .iter()
        .filter(|(p, _, _)| *p == channel)
        .count();
    state.requests.push((
        channel.clone(),
        key,
        serde_json::from_slice(&body).unwrap_or_default(),
    ));
    match state.fail_first.get(&channel) {
        Some((n, status)) if seen < *n => StatusCode::from_u16(*status).unwrap(),
        _ => StatusCode::ACCEPTED,
    }
}

pub(crate) fn customer(id: &str, language: &str, channel: &str, zone: &str) -> CustomerRow {
    CustomerRow {
        external_id: id.into(),
        name: "Anna Nowak".into(),
        email: Some(format!("{id}@example.com")),
        phone: Some("+48600100200".into()),
        preferred_channel: channel.into(),
        language: language.into(),
        timezone: zone.into(),
        quiet_hours: None,
        tier: "standard".into(),
        address: None,
        city: None,
        country: Some("PL".into()),
    }
}

/// A device of `customer`, somewhere unknown.
fn device(external_id: &str, kind: &str, customer: &str) -> forewarn::store::DeviceRow {
    forewarn::store::DeviceRow {
        external_id: external_id.into(),
        kind: kind.into(),
        model: None,
        customer_external_id: Some(customer.into()),
        latitude: None,
        longitude: None,
        installed_at: None,
        metadata: serde_json::json!({}),
    }
}

/// Queues a message straight into the outbox (as dispatch's transaction would).
async fn queue(
    pool: &sqlx::PgPool,
    key: &str,
    customer: &str,
    message_type: &str,
    urgent: bool,
    payload: serde_json::Value,
) {
    sqlx::query(
        "insert into outreach (idempotency_key, customer_id, message_type, channel, language,
                               urgent, payload, event_at)
         select $1, c.id, $3, c.preferred_channel, c.language, $4, $5, now()
         from customers c where c.external_id = $2",
    )
    .bind(key)
    .bind(customer)
    .bind(message_type)
    .bind(urgent)
    .bind(payload)
    .execute(pool)
    .await
    .unwrap();
}

fn proposal() -> serde_json::Value {
    serde_json::json!({
        "kind": "washer",
        "failure_mode": "washer/drum_bearing",
        "top_factors": [{"feature": "drum_vibration_rms.z_short", "value": 3.1,
                         "contribution": 0.5, "text": "drum vibration rms 24 h mean 3.1σ above"}],
        "slot_start": "2026-11-24T13:00:00Z",
        "slot_end": "2026-11-24T14:00:00Z",
        "technician": "Marek",
    })
}

/// One proposal per customer: key `k<i>` for customer `c<i>`.
async fn one_proposal_per_customer(pool: &sqlx::PgPool) {
    sqlx::query(
        "insert into outreach (idempotency_key, customer_id, message_type, channel, language,
                               payload, event_at)
         select 'k' || substr(c.external_id, 2), c.id, 'booking_proposed', c.preferred_channel,
                c.language, $1, now()
         from customers c",
    )
    .bind(proposal())
    .execute(pool)
    .await
    .unwrap();
}

pub(crate) fn config() -> OutreachConfig {
    OutreachConfig {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        send_timeout: Duration::from_secs(5),
        lease: Duration::from_secs(30),
        signing_secret: Some(Secret::new(SECRET)),
        ..OutreachConfig::default()
    }
}

/// `forewarn <stage>` from the release binary on `database_url`, its SMS going to
/// `provider`: short intervals, a 1 s send timeout, a 12 s lease and batches of 20, so a
/// kill lands mid-batch (the callers kill it again and again).
pub(crate) fn stage_process(
    stage: &str,
    database_url: &str,
    provider: &Provider,
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_forewarn"));
    command
        .arg(stage)
        .env("DATABASE_URL", database_url)
        .env("FOREWARN_HTTP_ADDR", "127.0.0.1:0")
        .env("FOREWARN_OUTREACH__SMS_URL", provider.url("sms"))
        .env("FOREWARN_OUTREACH__SIGNING_SECRET", SECRET)
        .env("FOREWARN_OUTREACH__INTERVAL", "50ms")
        .env("FOREWARN_OUTREACH__SEND_TIMEOUT", "1s")
        .env("FOREWARN_OUTREACH__LEASE", "12s")
        .env("FOREWARN_OUTREACH__BATCH", "20")
        .stdout(std::process::Stdio::null());
    command
}

/// Runs batches until nothing is pending or `timeout` passes.
pub(crate) async fn deliver_all(outreach: &Outreach, pool: &sqlx::PgPool, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        outreach.drain().await.unwrap();
        let pending = count(
            pool,
            "select count(*) from outreach where status in ('pending', 'sending')",
        )
        .await;
        if pending == 0 || tokio::time::Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_a_real_smtp_server_in_the_customers_language_and_time_zone() {
    let db = TestDb::new().await;
    let sink = tokio::task::spawn_blocking(SmtpSink::start).await.unwrap();
    db.store
        .upsert_customers(&[customer("pl-1", "pl-PL", "email", "Europe/Warsaw")])
        .await
        .unwrap();
    let pool = db.query().await;
    queue(
        &pool,
        "ticket:1:booking:1",
        "pl-1",
        "booking_proposed",
        false,
        proposal(),
    )
    .await;
    let outreach = Outreach::new(
        db.store.clone(),
        &OutreachConfig {
            smtp_url: Some(Secret::new(format!("smtp://127.0.0.1:{}", sink.port))),
            email_from: "forewarn <service@forewarn.example>".into(),
            ..config()
        },
        None,
    )
    .unwrap();
    let report = outreach.drain().await.unwrap();
    assert_eq!(report.sent, 1, "{report:?}");

    let received = sink.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let mail = &received[0];
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["pl-1@example.com"]));
    assert_eq!(mail["content_type"], "multipart/alternative");
    assert_eq!(mail["content_language"], "pl");
    let subject = mail["subject"].as_str().unwrap();
    assert!(subject.contains("Wizyta technika"), "{subject}");
    let parts = mail["parts"].as_array().unwrap();
    let part = |t: &str| {
        parts
            .iter()
            .find(|p| p["content_type"] == t)
            .unwrap_or_else(|| panic!("no {t} part: {parts:?}"))["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (text, html) = (part("text/plain"), part("text/html"));
    // 13:00 UTC is 14:00 in Warsaw, on a Tuesday, 24 November.
    for body in [&text, &html] {
        assert!(body.contains("wtorek, 24 listopada, 14:00–15:00"), "{body}");
        assert!(body.contains("Marek"), "{body}");
        assert!(
            body.contains("łożysko bębna Twojej pralki się zużywa"),
            "{body}"
        );
        assert!(body.contains("FW-M"), "the reply reference: {body}");
        assert!(!body.contains("drum_vibration_rms"), "{body}");
    }
    assert!(
        html.contains("<p>") && html.contains("lang=\"pl\""),
        "{html}"
    );
    // The Message-ID is the idempotency key's: a retry is the same email.
    let message_id = mail["message_id"].as_str().unwrap();
    assert!(message_id.ends_with("@forewarn.example>"), "{message_id}");

    let (status, response, subject_row): (String, String, String) = sqlx::query_as(
        "select status, provider_response, subject from outreach where idempotency_key = 'ticket:1:booking:1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "sent");
    assert!(response.starts_with("250"), "{response}");
    assert_eq!(subject_row, subject);
    // Sent once: nothing more is due.
    assert_eq!(outreach.drain().await.unwrap().claimed, 0);
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_is_retried_then_the_next_channel_delivers_and_a_refusal_moves_on_at_once()
 {
    let db = TestDb::new().await;
    let sink = tokio::task::spawn_blocking(SmtpSink::start).await.unwrap();
    let provider = Provider::start().await;
    db.store
        .upsert_customers(&[
            customer("sms-503", "en", "sms", "Europe/Warsaw"),
            customer("sms-400", "uk", "sms", "Europe/Kyiv"),
        ])
        .await
        .unwrap();
    let pool = db.query().await;
    queue(
        &pool,
        "503-msg",
        "sms-503",
        "booking_confirmed",
        false,
        proposal(),
    )
    .await;
    let outreach = Outreach::new(
        db.store.clone(),
        &OutreachConfig {
            smtp_url: Some(Secret::new(format!("smtp://127.0.0.1:{}", sink.port))),
            sms_url: Some(Secret::new(provider.url("sms"))),
            fallback_after: 3,
            ..config()
        },
        None,
    )
    .unwrap();
    // The SMS provider answers 503 to everything for now.
    provider
        .state
        .lock()
        .unwrap()
        .fail_first
        .insert("sms".into(), (usize::MAX, 503));
    deliver_all(&outreach, &pool, Duration::from_secs(20)).await;

    let sms = provider.requests("sms");
    assert_eq!(sms.len(), 3, "three tries on SMS, then email: {sms:?}");
    assert!(
        sms.iter().all(|(key, _)| key == "503-msg"),
        "one key on every try"
    );
    assert_eq!(sms[0].1["to"], "+48600100200");
    assert_eq!(sms[0].1["language"], "en");
    let mail = sink.received();
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(
        mail[0]["rcpt_tos"],
        serde_json::json!(["sms-503@example.com"])
    );
    let outcomes: Vec<(String, String)> = sqlx::query_as(
        "select a.channel, a.outcome from outreach_attempts a join outreach o on o.id = a.outreach_id
         where o.idempotency_key = '503-msg' order by a.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = [
        ("sms", "retry"),
        ("sms", "retry"),
        ("sms", "retry"),
        ("email", "sent"),
    ];
    assert_eq!(
        outcomes,
        expected
            .map(|(c, o)| (c.to_string(), o.to_string()))
            .to_vec()
    );
    let (status, channel, tried, attempts): (String, String, Vec<String>, i32) = sqlx::query_as(
        "select status, channel, channels_tried, attempts from outreach where idempotency_key = '503-msg'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), channel.as_str(), attempts),
        ("sent", "email", 4)
    );
    assert_eq!(tried, vec!["sms".to_string()]);

    // A refusal (400) is not retried on the same channel: email at once.
    provider
        .state
        .lock()
        .unwrap()
        .fail_first
        .insert("sms".into(), (usize::MAX, 400));
    queue(
        &pool,
        "400-msg",
        "sms-400",
        "technician_en_route",
        false,
        proposal(),
    )
    .await;
    deliver_all(&outreach, &pool, Duration::from_secs(20)).await;
    let refused: Vec<_> = provider
        .requests("sms")
        .into_iter()
        .filter(|(k, _)| k == "400-msg")
        .collect();
    assert_eq!(refused.len(), 1);
    let mail = sink.received();
    assert_eq!(mail.len(), 2);
    assert_eq!(mail[1]["content_language"], "uk");
    assert!(
        mail[1]["subject"].as_str().unwrap().contains("Marek"),
        "{:?}",
        mail[1]
    );

    // No channel left: failed, with the reason.
    provider
        .state
        .lock()
        .unwrap()
        .fail_first
        .insert("sms".into(), (usize::MAX, 400));
    let sms_only = Outreach::new(
        db.store.clone(),
        &OutreachConfig {
            sms_url: Some(Secret::new(provider.url("sms"))),
            ..config()
        },
        None,
    )
    .unwrap();
    queue(
        &pool,
        "no-channel",
        "sms-400",
        "resolved",
        false,
        proposal(),
    )
    .await;
    deliver_all(&sms_only, &pool, Duration::from_secs(20)).await;
    let (status, error): (String, String) = sqlx::query_as(
        "select status, last_error from outreach where idempotency_key = 'no-channel'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("400"), "{error}");
    assert_eq!(provider.state.lock().unwrap().bad_signatures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_a_routine_message_but_not_a_safety_critical_one() {
    let db = TestDb::new().await;
    let provider = Provider::start().await;
    // Quiet hours from this UTC hour for two hours (their zone is UTC).
    let hour = chrono::Timelike::hour(&chrono::Utc::now());
    let mut sleeper = customer("night", "sk", "sms", "UTC");
    sleeper.quiet_hours = Some((hour, (hour + 2) % 24));
    db.store.upsert_customers(&[sleeper]).await.unwrap();
    let pool = db.query().await;
    queue(
        &pool,
        "routine",
        "night",
        "proactive_notice",
        false,
        proposal(),
    )
    .await;
    let fridge = serde_json::json!({"kind": "fridge", "failure_mode": "fridge/compressor"});
    queue(&pool, "safety", "night", "proactive_notice", true, fridge).await;
    let outreach = Outreach::new(
        db.store.clone(),
        &OutreachConfig {
            sms_url: Some(Secret::new(provider.url("sms"))),
            ..config()
        },
        None,
    )
    .unwrap();
    let report = outreach.drain().await.unwrap();
    assert_eq!((report.sent, report.deferred), (1, 1), "{report:?}");
    let sms = provider.requests("sms");
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].0, "safety");
    assert_eq!(sms[0].1["language"], "sk");
    assert!(
        sms[0].1["text"]
            .as_str()
            .unwrap()
            .contains("kompresor vašej chladničky"),
        "{:?}",
        sms[0].1
    );
    let (status, attempts, due_hour): (String, i32, f64) = sqlx::query_as(
        "select status, attempts, extract(hour from next_attempt_at at time zone 'UTC')::float8
         from outreach where idempotency_key = 'routine'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "pending");
    assert_eq!(attempts, 0, "a deferral is not an attempt");
    assert_eq!(
        due_hour as u32,
        (hour + 2) % 24,
        "due when the quiet hours end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_send_and_commit_sends_every_message_once_under_its_key() {
    let db = TestDb::new().await;
    let provider = Provider::start().await;
    // A slow provider (50–250 ms an answer, spread): every kill lands while batches are in
    // flight, and with sends of a group finished but not yet written.
    {
        let mut state = provider.state.lock().unwrap();
        state.delay = Duration::from_millis(50);
        state.jitter = Duration::from_millis(200);
    }
    const MESSAGES: usize = 2000;
    let customers: Vec<CustomerRow> = (0..MESSAGES)
        .map(|i| {
            customer(
                &format!("c{i}"),
                ["en", "pl", "uk", "sk"][i % 4],
                "sms",
                "Europe/Warsaw",
            )
        })
        .collect();
    db.store.upsert_customers(&customers).await.unwrap();
    let pool = db.query().await;
    one_proposal_per_customer(&pool).await;
    let spawn = || {
        stage_process("outreach", &db.url, &provider)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap()
    };
    let requests = |provider: &Provider| provider.state.lock().unwrap().requests.len();
    let mut kills = 0;
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    while kills < 12 && requests(&provider) < MESSAGES {
        let mut child = spawn();
        // Killed 100–400 ms after it starts sending (SIGKILL: no chance to write).
        let before = requests(&provider);
        wait_until("the worker sends", Duration::from_secs(30), || {
            let provider = provider.clone();
            async move { requests(&provider) > before }
        })
        .await;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(100 + rng % 300)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    assert!(kills >= 5, "only {kills} kills before everything was sent");
    // Then one that may finish (the last leases run out after 12 s).
    let mut child = spawn();
    wait_until("every message sent", Duration::from_secs(120), || {
        let pool = pool.clone();
        async move {
            count(&pool, "select count(*) from outreach where status = 'sent'").await
                == MESSAGES as i64
        }
    })
    .await;
    sigterm(&child);
    child.wait().unwrap();

    let sms = provider.requests("sms");
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for (key, _) in &sms {
        *per_key.entry(key.clone()).or_default() += 1;
    }
    // None lost: every message reached the provider, and is `sent`.
    assert_eq!(per_key.len(), MESSAGES);
    assert!((0..MESSAGES).all(|i| per_key.contains_key(&format!("k{i}"))));
    // None sent twice: a message the provider got twice (sent, then the worker killed
    // before it wrote so) came under the same key both times, which the provider dedupes
    // on; no message ever went out under a key of another.
    let resent = per_key.values().filter(|n| **n > 1).count();
    eprintln!(
        "{kills} kills: {} requests for {MESSAGES} messages, {resent} re-sent after a kill under the same key",
        sms.len()
    );
    assert!(
        resent > 0,
        "no kill landed between a send and its write: the test did not test that"
    );
    // A re-send happens only for what a killed worker had claimed: at most its batches.
    assert!(resent <= kills * 4 * 20, "{resent} re-sent");
    assert_eq!(
        count(
            &pool,
            "select count(*) from outreach where status <> 'sent'"
        )
        .await,
        0
    );
    assert_eq!(provider.state.lock().unwrap().bad_signatures, 0);
}

/// `forewarn`'s HTTP server with inbound replies accepted, on a free port.
async fn serve_api(db: &TestDb, secret: &str) -> (SocketAddr, forewarn::shutdown::ShutdownTrigger) {
    let http = forewarn::api::HttpServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_inbound_secret(Some(Secret::new(secret)));
    let addr = http.local_addr();
    let (trigger, shutdown) = forewarn::shutdown::Shutdown::new();
    let state = forewarn::api::ApiState {
        inbound_secret: Some(Secret::new(secret)),
        ..forewarn::api::ApiState::new(forewarn::stage::StageDeps {
            store: db.store.clone(),
            metrics: forewarn::observability::Metrics::new(),
        })
    };
    tokio::spawn(http.serve(state, shutdown));
    (addr, trigger)
}

/// Posts a reply as a provider would, signed with `secret` at `t` (seconds).
async fn post_reply(
    addr: SocketAddr,
    channel: &str,
    body: &serde_json::Value,
    secret: &str,
    t: u64,
) -> (u16, serde_json::Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/inbound/{channel}"))
        .header(SIGNATURE_HEADER, signature(secret, t, &bytes))
        .header("content-type", "application/json")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_thread_onto_their_ticket_and_queue_by_language_and_area_and_none_is_dropped() {
    let db = TestDb::new().await;
    let mut anna = customer("anna", "pl-PL", "sms", "Europe/Warsaw");
    anna.city = Some("Kraków".into());
    let mut olena = customer("olena", "uk", "email", "Europe/Kyiv");
    olena.phone = Some("+380 44 123 4567".into());
    olena.city = Some("Lviv".into());
    db.store.upsert_customers(&[anna, olena]).await.unwrap();
    let devices = db
        .store
        .upsert_devices(&[
            device("washer-anna", "washer", "anna"),
            device("fridge-olena", "fridge", "olena"),
        ])
        .await
        .unwrap();
    let id_of = |name: &str| devices.iter().find(|(e, _)| e == name).unwrap().1;
    let now = chrono::Utc::now().timestamp_micros();
    let mut tickets = Vec::new();
    for device in ["washer-anna", "fridge-olena"] {
        let opened = forewarn::dispatch::customer_call(
            &db.store,
            &forewarn::dispatch::CustomerCall {
                device_id: id_of(device),
                failure_mode: format!("{}/unknown", device.split('-').next().unwrap()),
                at: now,
                priority: 3,
                actor: "test".into(),
                note: String::new(),
            },
        )
        .await
        .unwrap();
        tickets.push(opened.ticket_id());
    }
    let (addr, _trigger) = serve_api(&db, SECRET).await;
    let pool = db.query().await;

    // An SMS quoting its reference: that ticket, Anna's queue.
    let (status, reply) = post_reply(
        addr,
        "sms",
        &serde_json::json!({"id": "SM1", "from": "+48 600 100 200",
                            "text": format!("Wolę czwartek rano. FW-{}", tickets[0])}),
        SECRET,
        unix_seconds(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["ticket_id"], tickets[0]);
    assert_eq!(reply["threaded_by"], "reference");
    assert_eq!(reply["queue"], "pl/kraków");
    // The provider delivers it again: one reply.
    let (status, again) = post_reply(
        addr,
        "sms",
        &serde_json::json!({"id": "SM1", "from": "+48 600 100 200", "text": "Wolę czwartek rano."}),
        SECRET,
        unix_seconds(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], reply["id"]);

    // An email reply without its reference: threaded by the sender to their open ticket.
    let (status, by_sender) = post_reply(
        addr,
        "email",
        &serde_json::json!({"id": "<m1@mail>", "from": "Olena@Example.com",
                            "subject": "Re: візит", "text": "Так, підходить."}),
        SECRET,
        unix_seconds(),
    )
    .await;
    assert_eq!(status, 200, "{by_sender}");
    assert_eq!(by_sender["ticket_id"], tickets[1]);
    assert_eq!(by_sender["threaded_by"], "sender");
    assert_eq!(by_sender["queue"], "uk/lviv");

    // Someone nobody knows: kept, in the queue of the unknown.
    let (status, stranger) = post_reply(
        addr,
        "sms",
        &serde_json::json!({"id": "SM2", "from": "+1 555 0100", "text": "who is this?"}),
        SECRET,
        unix_seconds(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(stranger["ticket_id"], serde_json::Value::Null);
    assert_eq!(stranger["queue"], "und/unknown");

    // A reference to another customer's ticket from a known sender threads by sender.
    let (_, crossed) = post_reply(
        addr,
        "email",
        &serde_json::json!({"id": "<m2@mail>", "from": "olena@example.com",
                            "text": format!("FW-{}", tickets[0])}),
        SECRET,
        unix_seconds(),
    )
    .await;
    assert_eq!(crossed["ticket_id"], tickets[1], "{crossed}");

    // Refused, and nothing stored: a forged signature, an old one, a missing field.
    let body = serde_json::json!({"id": "SM3", "from": "+48600100200", "text": "x"});
    let (status, problem) =
        post_reply(addr, "sms", &body, "not-the-secret-at-all", unix_seconds()).await;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["status"], 401);
    let (status, _) = post_reply(addr, "sms", &body, SECRET, unix_seconds() - 3600).await;
    assert_eq!(status, 401);
    let (status, problem) = post_reply(
        addr,
        "sms",
        &serde_json::json!({"id": "SM4", "text": "x"}),
        SECRET,
        unix_seconds(),
    )
    .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (422, Some("from")),
        "{problem}"
    );
    assert_eq!(
        count(&pool, "select count(*) from customer_replies").await,
        4
    );

    // The reply is in its ticket's audit.
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from ticket_events where ticket_id = $1 and reason = 'customer_reply'",
    )
    .bind(tickets[0])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // A dispatcher answers: the time to first response is measured, once.
    let reply_id = reply["id"].as_i64().unwrap();
    let first = db
        .store
        .answer_reply(reply_id, "dispatcher-1")
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = db
        .store
        .answer_reply(reply_id, "dispatcher-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, second);
    let queues = db.store.reply_queues().await.unwrap();
    let krakow = queues.iter().find(|q| q.queue == "pl/kraków").unwrap();
    assert_eq!((krakow.waiting, krakow.answered), (0, 1));
    assert!(krakow.median_first_response_s.is_some());
    let lviv = queues.iter().find(|q| q.queue == "uk/lviv").unwrap();
    assert_eq!(lviv.waiting, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_or_a_refused_key_is_retried_never_taken_as_delivered_or_as_a_bad_message() {
    let db = TestDb::new().await;
    let provider = Provider::start().await;
    let mut only_sms = customer("only-sms", "en", "sms", "UTC");
    only_sms.email = None;
    db.store.upsert_customers(&[only_sms]).await.unwrap();
    let pool = db.query().await;
    let outreach = Outreach::new(
        db.store.clone(),
        &OutreachConfig {
            sms_url: Some(Secret::new(provider.url("sms"))),
            fallback_after: 1,
            ..config()
        },
        None,
    )
    .unwrap();
    for (status, key) in [(302, "redirected"), (401, "bad-key"), (409, "in-flight")] {
        let so_far = provider.requests("sms").len();
        provider
            .state
            .lock()
            .unwrap()
            .fail_first
            .insert("sms".into(), (so_far + 2, status));
        queue(
            &pool,
            key,
            "only-sms",
            "booking_confirmed",
            false,
            proposal(),
        )
        .await;
        deliver_all(&outreach, &pool, Duration::from_secs(20)).await;
        let tries = provider
            .requests("sms")
            .into_iter()
            .filter(|(k, _)| k == key)
            .count();
        assert_eq!(tries, 3, "{status}: two refusals, then delivered");
        let (state, attempts): (String, i32) =
            sqlx::query_as("select status, attempts from outreach where idempotency_key = $1")
                .bind(key)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((state.as_str(), attempts), ("sent", 3), "{status}");
    }
}

/// A database outage in the middle of delivering: claims and writes fail while it lasts,
/// the worker process keeps going, and afterwards every message is sent and written
/// `sent` — what was sent but not written is sent again under its own key (which the
/// provider dedupes on), nothing under another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_delivery_delays_messages_and_loses_none() {
    if std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1") {
        return; // the outage needs a cluster this test owns
    }
    let owned = OwnedCluster::start().await;
    let cluster = owned.cluster.clone();
    let db = TestDb::on(&cluster.url("postgres"), false).await;
    let provider = Provider::start().await;
    provider.state.lock().unwrap().delay = Duration::from_millis(50);
    const MESSAGES: usize = 600;
    let customers: Vec<CustomerRow> = (0..MESSAGES)
        .map(|i| customer(&format!("c{i}"), "pl", "sms", "Europe/Warsaw"))
        .collect();
    db.store.upsert_customers(&customers).await.unwrap();
    let pool = db.store_pool().clone();
    one_proposal_per_customer(&pool).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_forewarn"))
        .arg("outreach")
        .env("DATABASE_URL", &db.url)
        .env("FOREWARN_HTTP_ADDR", "127.0.0.1:0")
        .env("FOREWARN_OUTREACH__SMS_URL", provider.url("sms"))
        .env("FOREWARN_OUTREACH__SIGNING_SECRET", SECRET)
        .env("FOREWARN_OUTREACH__INTERVAL", "100ms")
        .env("FOREWARN_OUTREACH__SEND_TIMEOUT", "1s")
        .env("FOREWARN_OUTREACH__LEASE", "12s")
        .env("FOREWARN_OUTREACH__BATCH", "20")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let requests = |provider: &Provider| provider.state.lock().unwrap().requests.len();
    wait_until("a third sent", Duration::from_secs(60), || {
        let provider = provider.clone();
        async move { requests(&provider) >= MESSAGES / 3 }
    })
    .await;
    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop().unwrap())
        .await
        .unwrap();
    let at_stop = requests(&provider);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = requests(&provider) - at_stop;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the worker process survives the outage"
    );
    let restart = cluster.clone();
    tokio::task::spawn_blocking(move || restart.restart().unwrap())
        .await
        .unwrap();
    wait_until("every message sent", Duration::from_secs(120), || {
        let pool = pool.clone();
        async move {
            count(&pool, "select count(*) from outreach where status = 'sent'").await
                == MESSAGES as i64
        }
    })
    .await;
    sigterm(&child);
    child.wait().unwrap();

    let mut per_key: HashMap<String, usize> = HashMap::new();
    for (key, _) in provider.requests("sms") {
        *per_key.entry(key).or_default() += 1;
    }
    let resent = per_key.values().filter(|n| **n > 1).count();
    eprintln!(
        "outage after {at_stop} sends: {during} sent while down (already claimed), {resent} re-sent after it under their own key"
    );
    // Nothing new is claimed while the database is down: only what was in flight goes out.
    assert!(during <= 4 * 20, "{during} sent during the outage");
    assert_eq!(per_key.len(), MESSAGES);
    assert!((0..MESSAGES).all(|i| per_key.contains_key(&format!("k{i}"))));
    assert!(resent <= 4 * 20, "{resent} re-sent");
    assert_eq!(
        count(
            &pool,
            "select count(*) from outreach where status <> 'sent'"
        )
        .await,
        0
    );
    db.store.close().await;
    drop(owned);
}
