//! The demo's closed loop, through real parts: every forewarn stage in this process (ingest
//! from a private Mosquitto, dispatch, outreach, the HTTP API and link pages) on a scratch
//! PostgreSQL database, and the simulator publishing a fleet whose field answers through
//! the API. A customer calls about a device whose component is wearing out; dispatch books
//! a technician; the simulated technician turns up at the slot, replaces the part, and
//! records it; the failure never happens and the truth says `prevented`. The customer gets
//! the booking by SMS/push/webhook on the simulator's gateway, confirms it through the
//! signed link and replies quoting the reference.

use std::time::{Duration, Instant};

use forewarn::app::{App, StageKind};
use forewarn::demo::make_demo_key;
use forewarn::embedded::mosquitto::Mosquitto;
use forewarn::outreach::Secret;
use forewarn::shutdown::Shutdown;
use forewarn_sim::degradation::DAY_MICROS;
use forewarn_sim::field::{CustomerHabits, Field, FieldOptions};
use forewarn_sim::live::{LiveOptions, run_live};
use forewarn_sim::sim::{Artefacts, Fleet, SimConfig, TruthRecord};

mod common;

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_booked_before_the_failure_prevents_it_and_the_customer_answers() {
    let (store, url) = common::test_store_named("field").await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mosquitto = Mosquitto::start(1000).expect("mosquitto");
    let now = chrono::Utc::now().timestamp_micros();
    let start = now - 5 * DAY_MICROS;
    let call_at = start + 3 * DAY_MICROS / 2;
    // A device whose customer reads SMS, push or webhook, with a component wearing out
    // visibly by the time of the call and failing no sooner than two days after it.
    let (fleet, device_idx, component, failure_at) = (1..)
        .find_map(|seed| {
            let fleet = Fleet::build(SimConfig {
                seed,
                devices: 200,
                start,
                end: now,
                interval: 10 * 60 * 1_000_000,
                artefacts: Artefacts::none(),
                nuisance_scale: 1.0,
                failure_scale: 2.0,
            });
            let found = fleet.devices.iter().find_map(|device| {
                if fleet.customers[device.customer_index].preferred_channel == "email" {
                    return None;
                }
                let modes = device.kind.spec().modes;
                device
                    .episodes
                    .iter()
                    .enumerate()
                    .find_map(|(mode_idx, episodes)| {
                        episodes
                            .iter()
                            .find(|e| {
                                !e.sudden
                                    && e.health(call_at) >= 0.05
                                    && e.failure_at >= call_at + 2 * DAY_MICROS
                                    && e.failure_at < now
                            })
                            .map(|e| (device.index, modes[mode_idx].component, e.failure_at))
                    })
            });
            found.map(|(d, c, f)| (fleet, d, c, f))
        })
        .unwrap();
    let device = fleet.devices[device_idx].external_id.clone();
    forewarn_sim::history::register_fleet(&fleet, &store)
        .await
        .unwrap();

    // forewarn, every stage, set up as `forewarn demo` sets it up.
    let http = free_port();
    let gateway = free_port();
    let inbound_secret = "inbound-secret-for-the-field-test".to_string();
    let mut config = forewarn::config::Config::default();
    config.http.addr = http;
    config.mqtt.client_id = format!("field-test-{}", std::process::id());
    config.predict.interval = None; // only the customer's call opens a ticket
    config.dispatch.interval = Some(Duration::from_secs(1));
    let outreach = &mut config.outreach;
    outreach.log_channel = true;
    outreach.quiet_hours = false;
    outreach.public_url = format!("http://{http}");
    outreach.sms_url = Some(Secret::new(format!("http://{gateway}/sms")));
    outreach.push_url = Some(Secret::new(format!("http://{gateway}/push")));
    outreach.webhook_url = Some(Secret::new(format!("http://{gateway}/webhook")));
    outreach.signing_secret = Some(Secret::new("signing-secret-for-the-field-test"));
    outreach.inbound_secret = Some(Secret::new(inbound_secret.clone()));
    let app = App::new(&config, store.clone()).await.unwrap();
    let (stop, shutdown) = Shutdown::new();
    let mqtt_url = mosquitto.url();
    let running = {
        let config = config.clone();
        tokio::spawn(async move {
            app.run(&config, &mqtt_url, StageKind::SERVE, shutdown)
                .await
        })
    };
    let api_url = format!("http://{http}");
    let dispatcher = make_demo_key(&store, "test-desk", "dispatcher")
        .await
        .unwrap();
    let field = Field::new(FieldOptions {
        api_url: api_url.clone(),
        api_key: make_demo_key(&store, "test-field", "integration")
            .await
            .unwrap(),
        inbound_secret: Some(inbound_secret),
        gateway: Some(gateway),
        seed: 1,
        habits: CustomerHabits {
            confirm: 1.0,
            reschedule: 0.0,
            decline: 0.0,
            reply: 1.0,
            reading: Duration::from_millis(100),
        },
    })
    .unwrap();
    let truth_path =
        std::env::temp_dir().join(format!("fw-field-truth-{}.jsonl", std::process::id()));
    let options = LiveOptions {
        mqtt_url: mosquitto.url(),
        topic_prefix: "devices".into(),
        speed: 2.0 * 3600.0,
        connections: 2,
        field: Some(field.clone()),
        truth: Some(truth_path.clone()),
    };
    let (_stop_sim, sim_shutdown) = Shutdown::new();
    let fleet_ref = &fleet;
    let publishing = async move { run_live(fleet_ref, &options, sim_shutdown).await };
    let calling = async {
        // The customer calls once the fleet's clock has reached the call time.
        let deadline = Instant::now() + Duration::from_secs(60);
        while store.fleet_clock().await.unwrap().unwrap_or(i64::MIN) < call_at {
            assert!(
                Instant::now() < deadline,
                "the fleet's clock never reached the call"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let response = reqwest::Client::new()
            .post(format!("{api_url}/api/v1/tickets"))
            .bearer_auth(&dispatcher)
            .header("content-type", "application/json")
            .body(
                serde_json::json!({"device": device, "component": component,
                    "note": "it makes an odd noise"})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{response:?}");
        let created: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        created["ticket_id"].as_i64().unwrap()
    };
    let (published, ticket_id) = tokio::join!(publishing, calling);
    published.unwrap();

    // The visit is recorded through the API (three calls after the slot).
    let resolved = async {
        loop {
            let row: (String, Option<String>, Option<String>) = sqlx::query_as(
                "select status, outcome, outcome_component from tickets where id = $1",
            )
            .bind(ticket_id)
            .fetch_one(&pool)
            .await
            .unwrap();
            if row.0 == "resolved" {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (status, outcome, outcome_component) =
        tokio::time::timeout(Duration::from_secs(20), resolved)
            .await
            .expect("the technician's visit was recorded");
    assert_eq!(status, "resolved");
    assert_eq!(outcome.as_deref(), Some("fault_confirmed"));
    assert_eq!(outcome_component.as_deref(), Some(component));
    let report = field.report();
    assert!(report.prevented >= 1, "{report:?}");

    // The failure never happened: no critical event for that component after the call,
    // and the truth marks it prevented.
    let failures: i64 = sqlx::query_scalar(
        "select count(*) from device_events e join devices d on d.id = e.device_id
         where d.external_id = $1 and e.code = 'FAIL' and e.message = $2 and e.time >= $3",
    )
    .bind(&device)
    .bind(format!("{component} failure"))
    .bind(chrono::DateTime::from_timestamp_micros(call_at).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(failures, 0, "the prevented failure was not reported");
    let truth: Vec<TruthRecord> = forewarn_sim::read_json_lines(&truth_path).unwrap();
    let record = truth
        .iter()
        .find(|r| r.device == device && r.component == component)
        .expect("the failure is in the truth");
    assert!(record.prevented, "{record:?}");
    assert_eq!(record.failure_at.timestamp_micros(), failure_at);

    // The customer got the booking on their phone, confirmed it through the signed link
    // and replied quoting the reference: the answer and the reply are on the ticket.
    let answers = async {
        loop {
            let (confirmed, replies): (i64, i64) = sqlx::query_as(
                "select (select count(*) from link_answers
                         where ticket_id = $1 and action = 'confirm'),
                        (select count(*) from customer_replies where ticket_id = $1)",
            )
            .bind(ticket_id)
            .fetch_one(&pool)
            .await
            .unwrap();
            if confirmed >= 1 && replies >= 1 {
                return (confirmed, replies);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), answers)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no confirmation or reply on the ticket: {:?}",
                field.report()
            )
        });
    let report = field.report();
    assert!(report.messages_received >= 1 && report.confirmed >= 1 && report.replies >= 1);
    assert_eq!(report.api_errors, 0, "{report:?}");

    stop.trigger();
    running.await.unwrap().unwrap();
    let _ = std::fs::remove_file(truth_path);
}
