//! The `/api/v1` route groups against real PostgreSQL over real HTTP: each group's answers
//! from seeded data (devices and telemetry, tickets through their whole life, technicians,
//! customers, replies, incidents, messages, models, dead letters, KPIs, the live stream,
//! the OpenAPI document), bad input (each a 4xx problem+json naming the field, never a
//! 5xx), and every route × role.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use forewarn::api::HttpServer;
use forewarn::dispatch::DispatchConfig;
use forewarn::observability::Metrics;
use forewarn::outreach::OutreachConfig;
use forewarn::shutdown::{Shutdown, ShutdownTrigger};
use forewarn::stage::StageDeps;
use forewarn::store::{PredictionRow, Store};
use serde_json::{Value, json};

use crate::support::*;

/// A client of one server with one key.
struct Api {
    base: String,
    key: String,
    client: reqwest::Client,
}

impl Api {
    fn as_key(&self, key: &str) -> Api {
        Api {
            base: self.base.clone(),
            key: key.to_string(),
            client: self.client.clone(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, &url)
            .bearer_auth(&self.key)
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response.text().await.unwrap();
        if status >= 400 {
            assert_eq!(
                content_type, "application/problem+json",
                "{path}: {status} {text}"
            );
        }
        assert!(status < 500, "{path}: a 5xx: {status} {text}");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }
}

async fn serve(store: &Store) -> (SocketAddr, ShutdownTrigger) {
    let http = HttpServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_links(OutreachConfig::default(), DispatchConfig::default())
        .with_rate_limit(10_000, 10_000);
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

/// What [`seed`] made.
struct Fleet {
    washer: String,
    car: String,
    customer: String,
    /// Near the washer, repairs washers, on shift every day.
    near: (String, i32),
    /// Far away: nothing in range.
    far: (String, i32),
    now: DateTime<Utc>,
}

/// Two devices (a washer of a customer, with 48 h of telemetry, events and scores; a car
/// without one), two technicians, a reply, an incident, models and dead letters.
async fn seed(store: &Store, pool: &sqlx::PgPool) -> Fleet {
    let now = Utc::now();
    let customer = unique("cust-");
    let customer_id: i64 = sqlx::query_scalar(
        "insert into customers (external_id, name, email, language)
         values ($1, 'Ada Customer', 'ada@example.com', 'en') returning id",
    )
    .bind(&customer)
    .fetch_one(pool)
    .await
    .unwrap();
    let washer = unique("WASH-");
    let car = unique("CAR-");
    let washer_id: i32 = sqlx::query_scalar(
        "insert into devices (external_id, kind, model, customer_id, latitude, longitude,
                              last_seen_at, online)
         values ($1, 'washer', 'WX-1', $2, 52.23, 21.01, $3, true) returning id",
    )
    .bind(&washer)
    .bind(customer_id)
    .bind(now)
    .fetch_one(pool)
    .await
    .unwrap();
    let car_id: i32 = sqlx::query_scalar(
        "insert into devices (external_id, kind, last_seen_at) values ($1, 'car', $2)
         returning id",
    )
    .bind(&car)
    .bind(now - chrono::Duration::hours(1))
    .fetch_one(pool)
    .await
    .unwrap();
    // 48 h of a metric every 10 min: value = minutes since the start, so each hour's
    // average is known.
    sqlx::query(
        "insert into metrics (name, unit) values ('drum_temp', 'C') on conflict do nothing",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into telemetry (time, device_id, metric_id, value)
         select $2 - make_interval(mins => 10 * i), $1,
                (select id from metrics where name = 'drum_temp'), i
         from generate_series(0, 287) i",
    )
    .bind(washer_id)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into telemetry_hourly_dirty (bucket)
         select distinct date_bin(interval '1 hour', time, timestamptz '1970-01-01 00:00:00+00')
         from telemetry",
    )
    .execute(pool)
    .await
    .unwrap();
    store.refresh_rollup_now().await.unwrap();
    for (i, code) in ["E10", "E20", "E30"].iter().enumerate() {
        sqlx::query(
            "insert into device_events (time, device_id, code, severity, message)
             values ($1, $2, $3, 'warning', 'pump slow')",
        )
        .bind(now - chrono::Duration::hours(i as i64 + 1))
        .bind(washer_id)
        .bind(code)
        .execute(pool)
        .await
        .unwrap();
    }
    let mut predictions = Vec::new();
    for hours_ago in 0..24 {
        for (mode, risk) in [("washer/pump", 0.8), ("washer/bearing", 0.1)] {
            predictions.push(PredictionRow {
                time: now - chrono::Duration::hours(hours_ago),
                device_id: washer_id,
                failure_mode: mode.to_string(),
                probability: risk - 0.01 * hours_ago as f64,
                horizon_hours: 168.0,
                model_version: "v1".to_string(),
                above_threshold: risk > 0.5,
                top_factors: json!([{"feature": "drum_temp.mean_24h", "weight": 0.4}]),
            });
        }
    }
    predictions.push(PredictionRow {
        time: now,
        device_id: car_id,
        failure_mode: "car/battery".to_string(),
        probability: 0.3,
        horizon_hours: 168.0,
        model_version: "v1".to_string(),
        above_threshold: false,
        top_factors: json!([]),
    });
    store.insert_predictions(&predictions).await.unwrap();
    let technician = |external_id: String, latitude: f64| {
        let pool = pool.clone();
        async move {
            let id: i32 = sqlx::query_scalar(
                "insert into technicians (external_id, name, skills, home_latitude,
                     home_longitude, timezone, shift_days, shift_start, shift_end)
                 values ($1, 'Tom Tech', '{washer/*,car/*}', $2, 21.0, 'UTC', '{1,2,3,4,5,6,7}',
                         '00:00', '23:45')
                 returning id",
            )
            .bind(&external_id)
            .bind(latitude)
            .fetch_one(&pool)
            .await
            .unwrap();
            (external_id, id)
        }
    };
    let near = technician(unique("tech-near-"), 52.2).await;
    let far = technician(unique("tech-far-"), 10.0).await;
    sqlx::query(
        "insert into customer_replies (provider_id, channel, sender, body, customer_id,
                                       threaded_by, queue)
         values ($1, 'email', 'ada@example.com', 'Can you come on Friday?', $2, 'sender',
                 'dispatch')",
    )
    .bind(unique("reply-"))
    .bind(customer_id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into incidents (failure_mode, opened_at, center_latitude, center_longitude,
                                radius_km, device_count)
         values ('silence', $1, 52.2, 21.0, 3.5, 12)",
    )
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    for (version, active) in [("v0", false), ("v1", true)] {
        sqlx::query(
            "insert into models (version, failure_mode, algorithm, horizon_hours, features,
                                 metrics, threshold, artifact_path, data_from, data_to, active)
             values ($1, 'washer/pump', 'gradient_boosted_trees', 168, '[\"a\", \"b\"]',
                     '{\"test\": {\"events\": {\"precision\": 0.61, \"recall\": 0.55}}}', 0.4,
                     'models/x', $2, $3, $4)",
        )
        .bind(version)
        .bind(now - chrono::Duration::days(100))
        .bind(now - chrono::Duration::days(10))
        .bind(active)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "insert into model_promotions (failure_mode, from_version, to_version, reason)
         values ('washer/pump', null, 'v0', 'first'), ('washer/pump', 'v0', 'v1', 'better')",
    )
    .execute(pool)
    .await
    .unwrap();
    for (topic, payload, reason) in [
        (
            format!("devices/{washer}/telemetry"),
            b"{not json".to_vec(),
            "bad_json",
        ),
        (
            format!("devices/{car}/telemetry"),
            vec![0xff, 0xfe, b'x'],
            "bad_json",
        ),
        (
            "devices/OTHER/telemetry".to_string(),
            b"{}".to_vec(),
            "unknown_metric",
        ),
    ] {
        sqlx::query(
            "insert into dead_letters (topic, payload, reason, detail) values ($1, $2, $3, 'why')",
        )
        .bind(topic)
        .bind(payload)
        .bind(reason)
        .execute(pool)
        .await
        .unwrap();
    }
    Fleet {
        washer,
        car,
        customer,
        near,
        far,
        now,
    }
}

/// Every route group answers from what is in the database, and a ticket goes through its
/// whole life by the API: a customer's call opens it, a dispatcher books one of the times
/// the planner offers (the customer is told), the technician goes en route, on site and
/// resolves it with the fault confirmed (the label written), then it is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_groups_answer_from_the_database_and_a_ticket_lives_through_the_api() {
    init_logs();
    let db = TestDb::new().await;
    let pool = db.query().await;
    let fleet = seed(&db.store, &pool).await;
    let (addr, _server) = serve(&db.store).await;
    let admin = Api {
        base: format!("http://{addr}"),
        key: make_key(&db.store, "admin", None).await,
        client: reqwest::Client::new(),
    };
    let api = admin.as_key(&make_key(&db.store, "dispatcher", None).await);

    // Devices: riskiest first, filters, pages, detail.
    let devices = api.ok("/api/v1/devices").await;
    let items = devices["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{devices}");
    assert_eq!(items[0]["external_id"], fleet.washer.as_str());
    assert_eq!(items[0]["risk"]["failure_mode"], "washer/pump");
    assert!((items[0]["risk"]["probability"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    assert_eq!(items[0]["customer"], fleet.customer.as_str());
    assert_eq!(items[1]["external_id"], fleet.car.as_str());
    let first = api.ok("/api/v1/devices?limit=1").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let second = api
        .ok(&format!(
            "/api/v1/devices?limit=1&cursor={}",
            urlencode(&cursor)
        ))
        .await;
    assert_eq!(second["items"][0]["external_id"], fleet.car.as_str());
    assert!(second["next_cursor"].is_null());
    for (query, expected) in [
        ("kind=car", vec![fleet.car.as_str()]),
        ("min_risk=0.5", vec![fleet.washer.as_str()]),
        ("min_risk=0.9", vec![]),
        (
            &format!("customer={}", fleet.customer) as &str,
            vec![fleet.washer.as_str()],
        ),
        ("q=CAR-", vec![fleet.car.as_str()]),
        (
            "sort=last_seen",
            vec![fleet.washer.as_str(), fleet.car.as_str()],
        ),
        ("sort=external_id&limit=1", vec![fleet.car.as_str()]),
    ] {
        let page = api.ok(&format!("/api/v1/devices?{query}")).await;
        let ids: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["external_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, expected, "{query}");
    }
    let detail = api.ok(&format!("/api/v1/devices/{}", fleet.washer)).await;
    assert_eq!(detail["metrics"], json!(["drum_temp"]));
    assert_eq!(detail["risks"].as_array().unwrap().len(), 2);
    assert_eq!(
        detail["risks"][0]["top_factors"][0]["feature"],
        "drum_temp.mean_24h"
    );

    // Registration.
    let new_device = unique("NEW-");
    let put = |body: Value| {
        let path = format!("/api/v1/devices/{new_device}");
        let api = &admin;
        async move { api.call("PUT", &path, Some(body)).await }
    };
    let body =
        json!({"kind": "washer", "customer": fleet.customer, "latitude": 52.0, "longitude": 21.0});
    assert_eq!(put(body.clone()).await.0, 201);
    let (status, device) = put(body).await;
    assert_eq!(
        (status, device["customer"].clone()),
        (200, json!(fleet.customer))
    );
    let (status, problem) = put(json!({"kind": "washer", "customer": "nobody"})).await;
    assert_eq!((status, problem["field"].clone()), (422, json!("customer")));

    // Telemetry: whole hours from the rollup, shorter buckets from raw readings.
    let from = (fleet.now - chrono::Duration::hours(24)).to_rfc3339();
    let to = fleet.now.to_rfc3339();
    let hourly = api
        .ok(&format!(
            "/api/v1/devices/{}/telemetry?metric=drum_temp&from={}&to={}&bucket=3600",
            fleet.washer,
            urlencode(&from),
            urlencode(&to)
        ))
        .await;
    assert_eq!(hourly["source"], "telemetry_hourly");
    let points = hourly["points"].as_array().unwrap();
    assert!((24..=25).contains(&points.len()), "{hourly}");
    let raw = api
        .ok(&format!(
            "/api/v1/devices/{}/telemetry?metric=drum_temp&from={}&to={}&bucket=1800",
            fleet.washer,
            urlencode(&from),
            urlencode(&to)
        ))
        .await;
    assert_eq!(raw["source"], "telemetry");
    // The same readings either way: counts add up to the readings in the range.
    let total = |v: &Value| -> i64 {
        v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["count"].as_i64().unwrap())
            .sum()
    };
    let in_range: i64 =
        sqlx::query_scalar("select count(*) from telemetry where time >= $1 and time < $2")
            .bind(fleet.now - chrono::Duration::hours(24))
            .bind(fleet.now)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(total(&raw), in_range);
    // Hourly buckets cover whole hours: the first may start before `from`.
    assert!(
        (total(&hourly) - in_range).abs() <= 7,
        "{} vs {in_range}",
        total(&hourly)
    );
    let default = api
        .ok(&format!(
            "/api/v1/devices/{}/telemetry?metric=drum_temp",
            fleet.washer
        ))
        .await;
    assert!(default["points"].as_array().unwrap().len() <= 500);
    let events = api
        .ok(&format!("/api/v1/devices/{}/events?limit=2", fleet.washer))
        .await;
    assert_eq!(events["items"][0]["code"], "E10");
    let next = events["next_cursor"].as_str().unwrap().to_string();
    let rest = api
        .ok(&format!(
            "/api/v1/devices/{}/events?limit=2&cursor={}",
            fleet.washer,
            urlencode(&next)
        ))
        .await;
    assert_eq!(rest["items"][0]["code"], "E30");
    let scores = api
        .ok(&format!(
            "/api/v1/devices/{}/predictions?failure_mode=washer/pump&limit=500",
            fleet.washer
        ))
        .await;
    assert_eq!(scores["items"].as_array().unwrap().len(), 24);

    // A customer's call opens a reactive ticket; calling again adds to it.
    let call = json!({"device": fleet.washer, "component": "pump", "note": "It leaks"});
    let (status, created) = api.post("/api/v1/tickets", call.clone()).await;
    assert_eq!(status, 201, "{created}");
    let ticket = created["ticket_id"].as_i64().unwrap();
    let (status, merged) = api.post("/api/v1/tickets", call).await;
    assert_eq!((status, merged["merged"].clone()), (200, json!(true)));
    let open = api.ok("/api/v1/tickets?status=open&kind=reactive").await;
    assert_eq!(open["items"][0]["id"], ticket);
    let path = format!("/api/v1/tickets/{ticket}");
    let detail = api.ok(&path).await;
    assert_eq!(detail["failure_mode"], "washer/pump");
    assert_eq!(detail["occurrences"], 2);
    assert_eq!(detail["customer"], fleet.customer.as_str());

    // Booked by hand at a time the planner offers; the far technician does not fit.
    let options = api.ok(&format!("{path}/options")).await;
    let choice = &options["items"][0];
    assert_eq!(choice["technician"], fleet.near.0.as_str(), "{options}");
    let (status, refused) = api
        .post(
            &format!("{path}/book"),
            json!({"technician": fleet.far.0, "start": choice["start"]}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains(&fleet.near.0),
        "{refused}"
    );
    let (status, booked) = api
        .post(
            &format!("{path}/book"),
            json!({"technician": choice["technician"], "start": choice["start"]}),
        )
        .await;
    assert_eq!(status, 200, "{booked}");
    assert_eq!(booked["status"], "booked");
    assert_eq!(booked["technician"], fleet.near.0.as_str());
    assert_eq!(booked["slot_start"], choice["start"]);
    assert_eq!(booked["bookings"].as_array().unwrap().len(), 1);
    assert_eq!(booked["outreach"][0]["message_type"], "booking_proposed");
    let (status, _) = api
        .post(
            &format!("{path}/book"),
            json!({"technician": choice["technician"], "start": choice["start"]}),
        )
        .await;
    assert_eq!(status, 409, "a booked ticket is not booked twice");
    // The technician's day shows it.
    let start: DateTime<Utc> = choice["start"].as_str().unwrap().parse().unwrap();
    let route = api
        .ok(&format!(
            "/api/v1/technicians/{}/route?date={}",
            fleet.near.0,
            start.date_naive()
        ))
        .await;
    assert_eq!(route["stops"][0]["ticket_id"], ticket, "{route}");
    assert!(route["travel_km"].as_f64().unwrap() > 0.0);

    // Its life: en route, on site, resolved with the fault confirmed, closed.
    let step = |body: Value| {
        let path = format!("{path}/transitions");
        let api = &api;
        async move { api.post(&path, body).await }
    };
    assert_eq!(step(json!({"to": "closed"})).await.0, 409);
    assert_eq!(step(json!({"to": "en_route"})).await.0, 200);
    assert_eq!(step(json!({"to": "on_site"})).await.0, 200);
    let (status, problem) = step(json!({"to": "resolved"})).await;
    assert_eq!((status, problem["field"].clone()), (422, json!("outcome")));
    let (status, resolved) =
        step(json!({"to": "resolved", "outcome": "fault_confirmed", "reason": "pump replaced"}))
            .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["outcome"], "fault_confirmed");
    let labels: i64 = sqlx::query_scalar(
        "select count(*) from failures where ticket_id = $1 and source = 'technician_confirmed'",
    )
    .bind(ticket)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(labels, 1);
    assert_eq!(step(json!({"to": "closed"})).await.0, 200);
    assert_eq!(step(json!({"to": "cancelled"})).await.0, 409);
    let audit = api.ok(&path).await;
    let statuses: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to_status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.ends_with(&["booked", "en_route", "on_site", "resolved", "closed"]),
        "{statuses:?}"
    );

    // A second ticket booked, then the technician falls sick: it goes back to planning.
    let (_, second) = api
        .post(
            "/api/v1/tickets",
            json!({"device": fleet.washer, "component": "bearing", "note": "noise"}),
        )
        .await;
    let second = second["ticket_id"].as_i64().unwrap();
    let options = api.ok(&format!("/api/v1/tickets/{second}/options")).await;
    let choice = &options["items"][0];
    let (status, _) = api
        .post(
            &format!("/api/v1/tickets/{second}/book"),
            json!({"technician": choice["technician"], "start": choice["start"]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, away) = api
        .post(
            &format!("/api/v1/technicians/{}/unavailability", fleet.near.0),
            json!({"from": (fleet.now - chrono::Duration::hours(1)).to_rfc3339(), "reason": "sick"}),
        )
        .await;
    assert_eq!(status, 201, "{away}");
    assert_eq!(away["replanned"], json!([second]));
    assert_eq!(
        api.ok(&format!("/api/v1/tickets/{second}")).await["status"],
        "open"
    );

    // The roster.
    let roster = api.ok("/api/v1/technicians").await;
    assert_eq!(roster["items"].as_array().unwrap().len(), 2);
    let new_tech = json!({"external_id": unique("tech-new-"), "name": "Nina New",
        "skills": ["washer/*"], "home_latitude": 50.06, "home_longitude": 19.94,
        "timezone": "Europe/Warsaw", "shift_days": [1, 2, 3], "shift_start": "07:30",
        "shift_end": "15:30"});
    let (status, created) = api.post("/api/v1/technicians", new_tech.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["shift_start"], "07:30");
    assert_eq!(
        api.post("/api/v1/technicians", new_tech.clone()).await.0,
        409
    );
    let mut changed = new_tech.clone();
    changed["shift_days"] = json!([4, 5]);
    let tech_path = format!(
        "/api/v1/technicians/{}",
        new_tech["external_id"].as_str().unwrap()
    );
    let (status, replaced) = api.call("PUT", &tech_path, Some(changed)).await;
    assert_eq!(
        (status, replaced["shift_days"].clone()),
        (200, json!([4, 5]))
    );
    assert_eq!(api.call("DELETE", &tech_path, None).await.0, 204);
    assert_eq!(api.ok(&tech_path).await["active"], false);

    // Customers, replies, incidents, messages.
    let customers = api.ok("/api/v1/customers?q=cust-").await;
    assert_eq!(customers["items"][0]["devices"], 2);
    let customer = api
        .ok(&format!("/api/v1/customers/{}", fleet.customer))
        .await;
    assert_eq!(customer["tickets"].as_array().unwrap().len(), 2);
    let waiting = api.ok("/api/v1/replies?waiting=true").await;
    let reply = waiting["items"][0]["id"].as_i64().unwrap();
    let (status, answered) = api
        .post(
            &format!("/api/v1/replies/{reply}/answer"),
            json!({"note": "called back"}),
        )
        .await;
    assert_eq!(status, 200, "{answered}");
    assert!(answered["answered_at"].is_string());
    assert!(
        api.ok("/api/v1/replies?waiting=true").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        api.ok("/api/v1/incidents?status=open").await["items"][0]["device_count"],
        12
    );
    let messages = api.ok(&format!("/api/v1/outreach?ticket={ticket}")).await;
    assert!(!messages["items"].as_array().unwrap().is_empty());

    // Models: the card, activation and rollback (admin only).
    let models = api.ok("/api/v1/models").await;
    assert_eq!(models["items"].as_array().unwrap().len(), 2);
    let card = api.ok("/api/v1/models/v1/washer/pump").await;
    assert_eq!(card["precision"], 0.61);
    assert_eq!(card["promotions"].as_array().unwrap().len(), 2);
    assert_eq!(
        api.post(
            "/api/v1/models/rollback",
            json!({"failure_mode": "washer/pump"})
        )
        .await
        .0,
        403
    );
    let (status, rolled) = admin
        .post(
            "/api/v1/models/rollback",
            json!({"failure_mode": "washer/pump"}),
        )
        .await;
    assert_eq!(
        (status, rolled["version"].clone(), rolled["active"].clone()),
        (200, json!("v0"), json!(true))
    );
    let (status, active) = admin
        .post("/api/v1/models/v1/washer/pump/activate", json!({}))
        .await;
    assert_eq!((status, active["active"].clone()), (200, json!(true)));

    // Dead letters by reason and device.
    let letters = api.ok("/api/v1/dead-letters?reason=bad_json").await;
    assert_eq!(letters["items"].as_array().unwrap().len(), 2);
    let of_washer = api
        .ok(&format!("/api/v1/dead-letters?device={}", fleet.washer))
        .await;
    assert_eq!(of_washer["items"].as_array().unwrap().len(), 1);
    assert_eq!(of_washer["items"][0]["payload_preview"], "{not json");
    let reasons = api.ok("/api/v1/dead-letters/reasons").await;
    assert_eq!(
        reasons["items"][0],
        json!({"reason": "bad_json", "count": 2})
    );

    // KPIs of the period.
    let kpis = api.ok("/api/v1/kpis").await;
    assert_eq!(kpis["tickets"]["reactive"], 2, "{kpis}");
    assert_eq!(kpis["proactive_share"], 0.0);
    assert_eq!(kpis["first_time_fix_rate"], 1.0);
    assert!(kpis["median_time_to_resolution_hours"].is_number());
    assert!(kpis["proactive_precision"].is_null());
}

/// Bad input, route by route: a 4xx problem+json naming the field, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_naming_its_field() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    let fleet = seed(&db.store, &pool).await;
    let (addr, _server) = serve(&db.store).await;
    let api = Api {
        base: format!("http://{addr}"),
        key: make_key(&db.store, "admin", None).await,
        client: reqwest::Client::new(),
    };
    let washer = &fleet.washer;
    let (_, created) = api
        .post("/api/v1/tickets", json!({"device": washer, "note": "x"}))
        .await;
    let ticket = created["ticket_id"].as_i64().unwrap();
    let long = "x".repeat(3_000);
    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        ("GET", "/api/v1/devices?limit=0".into(), None, 422, "limit"),
        (
            "GET",
            "/api/v1/devices?limit=abc".into(),
            None,
            422,
            "limit",
        ),
        (
            "GET",
            "/api/v1/devices?limit=1&limit=2".into(),
            None,
            422,
            "query",
        ),
        (
            "GET",
            "/api/v1/devices?min_risk=2".into(),
            None,
            422,
            "min_risk",
        ),
        (
            "GET",
            "/api/v1/devices?sort=price".into(),
            None,
            422,
            "sort",
        ),
        (
            "GET",
            "/api/v1/devices?cursor=zzz".into(),
            None,
            422,
            "cursor",
        ),
        (
            "GET",
            "/api/v1/devices/bad%20id".into(),
            None,
            422,
            "external_id",
        ),
        (
            "GET",
            format!("/api/v1/devices/{washer}/telemetry"),
            None,
            422,
            "query",
        ),
        (
            "GET",
            format!("/api/v1/devices/{washer}/telemetry?metric=nope"),
            None,
            422,
            "metric",
        ),
        (
            "GET",
            format!("/api/v1/devices/{washer}/telemetry?metric=drum_temp&from=yesterday"),
            None,
            422,
            "from",
        ),
        (
            "GET",
            format!(
                "/api/v1/devices/{washer}/telemetry?metric=drum_temp&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"
            ),
            None,
            422,
            "from",
        ),
        (
            "GET",
            format!(
                "/api/v1/devices/{washer}/telemetry?metric=drum_temp&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"
            ),
            None,
            422,
            "from",
        ),
        (
            "GET",
            format!("/api/v1/devices/{washer}/telemetry?metric=drum_temp&bucket=10"),
            None,
            422,
            "bucket",
        ),
        (
            "GET",
            format!(
                "/api/v1/devices/{washer}/telemetry?metric=drum_temp&bucket=60&from=2026-01-01T00:00:00Z&to=2026-01-20T00:00:00Z"
            ),
            None,
            422,
            "bucket",
        ),
        (
            "GET",
            format!("/api/v1/devices/{washer}/events?cursor=x"),
            None,
            422,
            "cursor",
        ),
        (
            "GET",
            format!("/api/v1/devices/{washer}/predictions?to=9999-01-01T00:00:00Z"),
            None,
            422,
            "to",
        ),
        (
            "PUT",
            "/api/v1/devices/NEW-1".into(),
            Some(json!({"kind": "Washer!"})),
            422,
            "kind",
        ),
        (
            "PUT",
            "/api/v1/devices/NEW-1".into(),
            Some(json!({"kind": "washer", "latitude": 91, "longitude": 0})),
            422,
            "latitude",
        ),
        (
            "PUT",
            "/api/v1/devices/NEW-1".into(),
            Some(json!({"kind": "washer", "latitude": 1})),
            422,
            "longitude",
        ),
        (
            "PUT",
            "/api/v1/devices/NEW-1".into(),
            Some(json!({"kind": "washer", "colour": "red"})),
            422,
            "colour",
        ),
        (
            "GET",
            "/api/v1/tickets?status=lost".into(),
            None,
            422,
            "status",
        ),
        (
            "GET",
            "/api/v1/tickets?priority=9".into(),
            None,
            422,
            "priority",
        ),
        (
            "GET",
            "/api/v1/tickets?cursor=-4".into(),
            None,
            422,
            "cursor",
        ),
        ("GET", "/api/v1/tickets/abc".into(), None, 422, "id"),
        ("GET", "/api/v1/tickets/0".into(), None, 422, "id"),
        ("GET", "/api/v1/tickets/999999999".into(), None, 404, ""),
        (
            "POST",
            "/api/v1/tickets".into(),
            Some(json!({"device": washer})),
            422,
            "note",
        ),
        (
            "POST",
            "/api/v1/tickets".into(),
            Some(json!({"device": washer, "note": long})),
            422,
            "note",
        ),
        (
            "POST",
            "/api/v1/tickets".into(),
            Some(json!({"device": washer, "note": "x", "priority": 7})),
            422,
            "priority",
        ),
        (
            "POST",
            "/api/v1/tickets".into(),
            Some(json!({"device": washer, "note": "x", "priority": "high"})),
            422,
            "priority",
        ),
        (
            "POST",
            "/api/v1/tickets".into(),
            Some(json!({"device": washer, "note": "x", "component": "car/battery"})),
            422,
            "component",
        ),
        (
            "POST",
            "/api/v1/tickets".into(),
            Some(json!({"device": "NOPE", "note": "x"})),
            422,
            "device",
        ),
        (
            "POST",
            "/api/v1/tickets".into(),
            Some(json!([1, 2])),
            422,
            "body",
        ),
        (
            "POST",
            format!("/api/v1/tickets/{ticket}/book"),
            Some(json!({"technician": fleet.near.0, "start": "soon"})),
            422,
            "start",
        ),
        (
            "POST",
            format!("/api/v1/tickets/{ticket}/book"),
            Some(json!({"technician": "nobody", "start": "2030-01-01T08:00:00Z"})),
            422,
            "technician",
        ),
        (
            "POST",
            format!("/api/v1/tickets/{ticket}/transitions"),
            Some(json!({"to": "flying"})),
            422,
            "to",
        ),
        (
            "POST",
            format!("/api/v1/tickets/{ticket}/transitions"),
            Some(json!({"to": "resolved", "outcome": "maybe"})),
            422,
            "outcome",
        ),
        (
            "POST",
            format!("/api/v1/tickets/{ticket}/transitions"),
            Some(json!({"to": "en_route"})),
            409,
            "",
        ),
        (
            "GET",
            format!("/api/v1/tickets/{ticket}/options?limit=100"),
            None,
            422,
            "limit",
        ),
        (
            "POST",
            "/api/v1/technicians".into(),
            Some(
                json!({"external_id": "t", "name": "T", "home_latitude": 0, "home_longitude": 0, "timezone": "Mars/Base"}),
            ),
            422,
            "timezone",
        ),
        (
            "POST",
            "/api/v1/technicians".into(),
            Some(
                json!({"external_id": "t", "name": "T", "home_latitude": 0, "home_longitude": 0, "shift_days": [0]}),
            ),
            422,
            "shift_days",
        ),
        (
            "POST",
            "/api/v1/technicians".into(),
            Some(
                json!({"external_id": "t", "name": "T", "home_latitude": 0, "home_longitude": 0, "shift_start": "17:00", "shift_end": "09:00"}),
            ),
            422,
            "shift_end",
        ),
        (
            "POST",
            "/api/v1/technicians".into(),
            Some(
                json!({"external_id": "t", "name": "T", "home_latitude": 0, "home_longitude": 200}),
            ),
            422,
            "home_longitude",
        ),
        (
            "POST",
            "/api/v1/technicians".into(),
            Some(
                json!({"external_id": "t", "name": "T", "home_latitude": 0, "home_longitude": 0, "skills": ["washer"]}),
            ),
            422,
            "skills",
        ),
        (
            "POST",
            "/api/v1/technicians".into(),
            Some(json!({"name": "T"})),
            422,
            "external_id",
        ),
        (
            "POST",
            "/api/v1/technicians".into(),
            Some(json!({"external_id": "t", "name": 5, "home_latitude": 0, "home_longitude": 0})),
            422,
            "name",
        ),
        (
            "PUT",
            format!("/api/v1/technicians/{}", fleet.near.0),
            Some(
                json!({"external_id": "other", "name": "T", "home_latitude": 0, "home_longitude": 0}),
            ),
            422,
            "external_id",
        ),
        (
            "POST",
            format!("/api/v1/technicians/{}/unavailability", fleet.near.0),
            Some(
                json!({"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z", "reason": "x"}),
            ),
            422,
            "to",
        ),
        (
            "GET",
            format!("/api/v1/technicians/{}/route?date=2026-02-30", fleet.near.0),
            None,
            422,
            "date",
        ),
        (
            "GET",
            "/api/v1/technicians/nobody/route".into(),
            None,
            404,
            "",
        ),
        (
            "GET",
            "/api/v1/replies?waiting=maybe".into(),
            None,
            422,
            "waiting",
        ),
        (
            "POST",
            "/api/v1/replies/123456789/answer".into(),
            Some(json!({})),
            404,
            "",
        ),
        (
            "GET",
            "/api/v1/incidents?status=gone".into(),
            None,
            422,
            "status",
        ),
        (
            "GET",
            "/api/v1/outreach?ticket=x".into(),
            None,
            422,
            "ticket",
        ),
        (
            "GET",
            "/api/v1/models/v1/Washer/pump".into(),
            None,
            422,
            "kind",
        ),
        ("GET", "/api/v1/models/v9/washer/pump".into(), None, 404, ""),
        (
            "POST",
            "/api/v1/models/rollback".into(),
            Some(json!({"failure_mode": "pump"})),
            422,
            "failure_mode",
        ),
        (
            "POST",
            "/api/v1/models/rollback".into(),
            Some(json!({"failure_mode": "car/battery"})),
            409,
            "",
        ),
        (
            "GET",
            "/api/v1/dead-letters?device=a%20b".into(),
            None,
            422,
            "device",
        ),
        (
            "GET",
            "/api/v1/kpis?from=2026-01-01".into(),
            None,
            422,
            "from",
        ),
    ];
    for (method, path, body, expected, field) in cases {
        let (status, problem) = api.call(method, &path, body.clone()).await;
        assert_eq!(status, expected, "{method} {path} {body:?}: {problem}");
        if !field.is_empty() {
            assert_eq!(
                problem["field"], field,
                "{method} {path} {body:?}: {problem}"
            );
        }
    }
    // A body that is not JSON, or not declared as such.
    for (content_type, body) in [("text/plain", "{}"), ("application/json", "{\"note\": ")] {
        let response = api
            .client
            .post(format!("{}/api/v1/tickets", api.base))
            .bearer_auth(&api.key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 422, "{content_type}");
    }
    let huge = format!(
        "{{\"device\": \"x\", \"note\": \"{}\"}}",
        "y".repeat(100_000)
    );
    let response = api
        .client
        .post(format!("{}/api/v1/tickets", api.base))
        .bearer_auth(&api.key)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
}

/// Every route × role: what each role may do (2xx), may not (403), and what a technician's
/// key does not see (404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_role() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    let fleet = seed(&db.store, &pool).await;
    let (addr, _server) = serve(&db.store).await;
    let admin = Api {
        base: format!("http://{addr}"),
        key: make_key(&db.store, "admin", None).await,
        client: reqwest::Client::new(),
    };
    // Two open tickets: the technician's own (assigned) and another.
    let mut tickets = Vec::new();
    for component in ["pump", "bearing"] {
        let (_, created) = admin
            .post(
                "/api/v1/tickets",
                json!({"device": fleet.washer, "component": component, "note": "x"}),
            )
            .await;
        tickets.push(created["ticket_id"].as_i64().unwrap());
    }
    let (_, car_ticket) = admin
        .post("/api/v1/tickets", json!({"device": fleet.car, "note": "x"}))
        .await;
    let car_ticket = car_ticket["ticket_id"].as_i64().unwrap();
    sqlx::query("update tickets set technician_id = $1 where id = $2")
        .bind(fleet.near.1)
        .bind(tickets[0])
        .execute(&pool)
        .await
        .unwrap();
    let near = &fleet.near.0;
    let far = &fleet.far.0;
    let (mine, car) = (tickets[0], car_ticket);
    let tech_body = json!({"external_id": near, "name": "Tom", "home_latitude": 52.2,
        "home_longitude": 21.0, "skills": ["washer/*", "car/*"], "shift_days": [1,2,3,4,5,6,7],
        "shift_start": "00:00", "shift_end": "23:45"});
    // (method, path, body, [admin, dispatcher, integration, technician]); 0: any 2xx/409.
    let routes: Vec<(&str, String, Option<Value>, [u16; 4])> = vec![
        ("GET", "/api/v1/devices".into(), None, [200, 200, 200, 200]),
        (
            "GET",
            format!("/api/v1/devices/{}", fleet.washer),
            None,
            [200, 200, 200, 200],
        ),
        (
            "GET",
            format!("/api/v1/devices/{}", fleet.car),
            None,
            [200, 200, 200, 404],
        ),
        (
            "PUT",
            format!("/api/v1/devices/{}", fleet.car),
            Some(json!({"kind": "car"})),
            [200, 403, 200, 403],
        ),
        (
            "GET",
            format!(
                "/api/v1/devices/{}/telemetry?metric=drum_temp",
                fleet.washer
            ),
            None,
            [200, 200, 200, 200],
        ),
        (
            "GET",
            format!("/api/v1/devices/{}/events", fleet.car),
            None,
            [200, 200, 200, 404],
        ),
        (
            "GET",
            format!("/api/v1/devices/{}/predictions", fleet.washer),
            None,
            [200, 200, 200, 200],
        ),
        ("GET", "/api/v1/tickets".into(), None, [200, 200, 200, 200]),
        (
            "GET",
            format!("/api/v1/tickets/{mine}"),
            None,
            [200, 200, 200, 200],
        ),
        (
            "GET",
            format!("/api/v1/tickets/{car}"),
            None,
            [200, 200, 200, 404],
        ),
        (
            "POST",
            "/api/v1/tickets".into(),
            Some(json!({"device": fleet.washer, "note": "x"})),
            [0, 0, 0, 403],
        ),
        (
            "GET",
            format!("/api/v1/tickets/{car}/options"),
            None,
            [0, 0, 0, 403],
        ),
        (
            "POST",
            format!("/api/v1/tickets/{car}/book"),
            Some(json!({"technician": far, "start": "2030-01-01T08:00:00Z"})),
            [409, 409, 409, 403],
        ),
        (
            "POST",
            format!("/api/v1/tickets/{mine}/transitions"),
            Some(json!({"to": "on_site"})),
            [409, 409, 409, 409],
        ),
        (
            "POST",
            format!("/api/v1/tickets/{car}/transitions"),
            Some(json!({"to": "on_site"})),
            [409, 409, 409, 404],
        ),
        (
            "POST",
            format!("/api/v1/tickets/{mine}/transitions"),
            Some(json!({"to": "cancelled"})),
            [0, 0, 0, 403],
        ),
        (
            "GET",
            "/api/v1/technicians".into(),
            None,
            [200, 200, 200, 200],
        ),
        (
            "GET",
            format!("/api/v1/technicians/{near}"),
            None,
            [200, 200, 200, 200],
        ),
        (
            "GET",
            format!("/api/v1/technicians/{far}"),
            None,
            [200, 200, 200, 404],
        ),
        (
            "POST",
            "/api/v1/technicians".into(),
            Some(tech_body.clone()),
            [409, 409, 403, 403],
        ),
        (
            "PUT",
            format!("/api/v1/technicians/{near}"),
            Some(tech_body),
            [200, 200, 403, 403],
        ),
        (
            "GET",
            format!("/api/v1/technicians/{near}/route"),
            None,
            [200, 200, 200, 200],
        ),
        (
            "GET",
            format!("/api/v1/technicians/{far}/route"),
            None,
            [200, 200, 200, 404],
        ),
        (
            "POST",
            format!("/api/v1/technicians/{near}/unavailability"),
            Some(
                json!({"from": "2031-01-01T00:00:00Z", "to": "2031-01-02T00:00:00Z", "reason": "x"}),
            ),
            [201, 201, 403, 201],
        ),
        (
            "POST",
            format!("/api/v1/technicians/{far}/unavailability"),
            Some(
                json!({"from": "2031-01-01T00:00:00Z", "to": "2031-01-02T00:00:00Z", "reason": "x"}),
            ),
            [201, 201, 403, 404],
        ),
        (
            "GET",
            "/api/v1/customers".into(),
            None,
            [200, 200, 200, 403],
        ),
        (
            "GET",
            format!("/api/v1/customers/{}", fleet.customer),
            None,
            [200, 200, 200, 403],
        ),
        ("GET", "/api/v1/replies".into(), None, [200, 200, 200, 403]),
        (
            "POST",
            "/api/v1/replies/1/answer".into(),
            Some(json!({})),
            [0, 0, 403, 403],
        ),
        (
            "GET",
            "/api/v1/incidents".into(),
            None,
            [200, 200, 200, 403],
        ),
        ("GET", "/api/v1/outreach".into(), None, [200, 200, 200, 403]),
        ("GET", "/api/v1/models".into(), None, [200, 200, 200, 403]),
        (
            "GET",
            "/api/v1/models/v1/washer/pump".into(),
            None,
            [200, 200, 200, 403],
        ),
        (
            "POST",
            "/api/v1/models/v1/washer/pump/activate".into(),
            Some(json!({})),
            [200, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/models/rollback".into(),
            Some(json!({"failure_mode": "washer/pump"})),
            [200, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/dead-letters".into(),
            None,
            [200, 200, 200, 403],
        ),
        (
            "GET",
            "/api/v1/dead-letters/reasons".into(),
            None,
            [200, 200, 200, 403],
        ),
        ("GET", "/api/v1/kpis".into(), None, [200, 200, 200, 403]),
        (
            "DELETE",
            format!("/api/v1/technicians/{far}"),
            None,
            [204, 204, 403, 403],
        ),
    ];
    let mut apis = vec![admin.as_key(&admin.key)];
    for role in ["dispatcher", "integration"] {
        apis.push(admin.as_key(&make_key(&db.store, role, None).await));
    }
    apis.push(admin.as_key(&make_key(&db.store, "technician", Some(fleet.near.1)).await));
    let roles = ["admin", "dispatcher", "integration", "technician"];
    for (method, path, body, expected) in &routes {
        for ((api, role), want) in apis.iter().zip(roles).zip(expected) {
            let (status, answer) = api.call(method, path, body.clone()).await;
            if *want == 0 {
                assert!(
                    (200..300).contains(&status) || status == 409,
                    "{role} {method} {path}: {status} {answer}"
                );
            } else {
                assert_eq!(status, *want, "{role} {method} {path}: {answer}");
            }
        }
    }
    // Without a key every keyed route is 401 (checked on each of them).
    let nobody = admin.as_key("fwk_nobody");
    for (method, path, body, _) in &routes {
        assert_eq!(
            nobody.call(method, path, body.clone()).await.0,
            401,
            "{method} {path}"
        );
    }
    // The technician's list holds only their own jobs and devices.
    let technician = &apis[3];
    let own = technician.ok("/api/v1/tickets").await;
    let ids: Vec<i64> = own["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![mine]);
    let devices = technician.ok("/api/v1/devices").await;
    assert_eq!(devices["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        technician.ok("/api/v1/technicians").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// The OpenAPI document holds every keyed route (made from the handlers), needs no key, and
/// the live stream sends ticket and booking changes as they commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_names_every_route_and_the_stream_tells_changes_live() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    let fleet = seed(&db.store, &pool).await;
    let (addr, server) = serve(&db.store).await;
    let client = reqwest::Client::new();
    let document: Value = client
        .get(format!("http://{addr}/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/api/v1/devices",
        "/api/v1/devices/{external_id}",
        "/api/v1/devices/{external_id}/telemetry",
        "/api/v1/devices/{external_id}/events",
        "/api/v1/devices/{external_id}/predictions",
        "/api/v1/tickets",
        "/api/v1/tickets/{id}",
        "/api/v1/tickets/{id}/options",
        "/api/v1/tickets/{id}/book",
        "/api/v1/tickets/{id}/transitions",
        "/api/v1/technicians",
        "/api/v1/technicians/{external_id}",
        "/api/v1/technicians/{external_id}/unavailability",
        "/api/v1/technicians/{external_id}/route",
        "/api/v1/customers",
        "/api/v1/customers/{external_id}",
        "/api/v1/replies",
        "/api/v1/replies/{id}/answer",
        "/api/v1/incidents",
        "/api/v1/outreach",
        "/api/v1/models",
        "/api/v1/models/{version}/{kind}/{component}",
        "/api/v1/models/{version}/{kind}/{component}/activate",
        "/api/v1/models/rollback",
        "/api/v1/dead-letters",
        "/api/v1/dead-letters/reasons",
        "/api/v1/kpis",
        "/api/v1/stream",
    ] {
        assert!(paths.contains_key(path), "{path} missing from the document");
    }
    assert_eq!(paths.len(), 28, "{:?}", paths.keys().collect::<Vec<_>>());
    assert!(document["components"]["securitySchemes"]["api_key"].is_object());

    let key = make_key(&db.store, "dispatcher", None).await;
    let mut stream = client
        .get(format!("http://{addr}/api/v1/stream"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // Give the listener its connection, then change things.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let api = Api {
        base: format!("http://{addr}"),
        key,
        client: client.clone(),
    };
    let (_, created) = api
        .post(
            "/api/v1/tickets",
            json!({"device": fleet.washer, "note": "live"}),
        )
        .await;
    let ticket = created["ticket_id"].as_i64().unwrap();
    db.store
        .insert_predictions(&[PredictionRow {
            time: fleet.now,
            device_id: sqlx::query_scalar("select id from devices where external_id = $1")
                .bind(&fleet.washer)
                .fetch_one(&pool)
                .await
                .unwrap(),
            failure_mode: "washer/pump".into(),
            probability: 0.9,
            horizon_hours: 168.0,
            model_version: "v2".into(),
            above_threshold: true,
            top_factors: json!([]),
        }])
        .await
        .unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(seen.contains("event: ticket") && seen.contains("event: prediction")) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("stream events within 10 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(&format!("\"id\":{ticket}")), "{seen}");
    // The risk list shows the newer score.
    let devices = api.ok("/api/v1/devices?limit=1").await;
    assert_eq!(devices["items"][0]["risk"]["probability"], 0.9);
    // Shutting the server down ends the stream (it would hold the shutdown otherwise).
    server.trigger();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ended at shutdown");
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
