//! Customers' signed links end to end: dispatch books a visit, the outreach worker emails
//! the proposal to a real SMTP server (aiosmtpd) with its links in both MIME parts, and the
//! links are opened and answered over HTTP against `forewarn`'s server — confirm, another
//! time, decline — each changing ticket and booking once, in the customer's language; a
//! forged, expired, reused or outdated link gets its page and changes nothing.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use forewarn::dispatch::config::ProposalSettings;
use forewarn::dispatch::{CustomerCall, DispatchConfig, Dispatcher, customer_call};
use forewarn::outreach::links::{LinkAction, LinkSigner};
use forewarn::outreach::{Outreach, OutreachConfig, Secret};
use sqlx::PgPool;

use crate::outreach::{SmtpSink, config as outreach_config, deliver_all};
use crate::support::*;

const MINUTE: i64 = 60_000_000;
const WARSAW: (f64, f64) = (52.2297, 21.0122);

/// Monday 2 March 2026, 07:00 UTC.
fn t0() -> i64 {
    Utc.with_ymd_and_hms(2026, 3, 2, 7, 0, 0)
        .unwrap()
        .timestamp_micros()
}

fn dispatch_config() -> DispatchConfig {
    DispatchConfig {
        settle: Duration::from_secs(15 * 60),
        proposal: ProposalSettings {
            hold: Duration::ZERO,
            ..ProposalSettings::default()
        },
        ..DispatchConfig::default()
    }
}

/// A washer technician in Warsaw on weekdays from 11:00 (the first visits are more than
/// the two hours away within which a visit can no longer be moved by link).
async fn technician(pool: &PgPool, name: &str, home: (f64, f64)) -> i32 {
    sqlx::query_scalar(
        "insert into technicians (external_id, name, skills, home_latitude, home_longitude,
                                  timezone, shift_start, shift_end)
         values ($1, $2, '{washer/*}', $3, $4, 'Europe/Warsaw', '11:00', '18:00') returning id",
    )
    .bind(unique("tech-"))
    .bind(name)
    .bind(home.0)
    .bind(home.1)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A customer in Warsaw who prefers email, with `washers` washers; returns their ids.
async fn customer_with_washers(pool: &PgPool, language: &str, washers: usize) -> Vec<i32> {
    let customer: i64 = sqlx::query_scalar(
        "insert into customers (external_id, name, email, preferred_channel, language, timezone)
         values ($1, 'Anna Nowak', $2, 'email', $3, 'Europe/Warsaw') returning id",
    )
    .bind(unique("cust-"))
    .bind(format!("{}@example.com", unique("anna-")))
    .bind(language)
    .fetch_one(pool)
    .await
    .unwrap();
    let mut devices = Vec::new();
    for i in 0..washers {
        let id: i32 = sqlx::query_scalar(
            "insert into devices (external_id, kind, model, customer_id, latitude, longitude,
                                  last_seen_at)
             values ($1, 'washer', 'W1', $2, $3, $4, $5) returning id",
        )
        .bind(unique("washer-"))
        .bind(customer)
        .bind(WARSAW.0 + 0.01 * i as f64)
        .bind(WARSAW.1)
        .bind(chrono::DateTime::from_timestamp_micros(t0() + 20 * MINUTE).unwrap())
        .fetch_one(pool)
        .await
        .unwrap();
        devices.push(id);
    }
    devices
}

/// A customer's call for each device at t0, booked by a dispatch pass 20 minutes later
/// (the fleet's clock, which link answers take as their event time); the ticket ids.
async fn book_calls(db: &TestDb, devices: &[i32]) -> Vec<i64> {
    let mut tickets = Vec::new();
    for device_id in devices {
        let opened = customer_call(
            &db.store,
            &CustomerCall {
                device_id: *device_id,
                failure_mode: "washer/drum_bearing".into(),
                at: t0(),
                priority: 3,
                actor: "test".into(),
                note: "it rumbles".into(),
            },
        )
        .await
        .unwrap();
        tickets.push(opened.ticket_id());
    }
    let report = Dispatcher::new(db.store.clone(), dispatch_config())
        .pass(Some(t0() + 20 * MINUTE))
        .await
        .unwrap();
    assert_eq!(report.booked, devices.len() as u64, "{report:?}");
    tickets
}

/// `forewarn`'s HTTP server serving links, on a free port.
async fn serve_links(
    db: &TestDb,
    outreach: &OutreachConfig,
) -> (SocketAddr, forewarn::shutdown::ShutdownTrigger) {
    let http = forewarn::api::HttpServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_links(outreach.clone(), dispatch_config());
    let addr = http.local_addr();
    let (trigger, shutdown) = forewarn::shutdown::Shutdown::new();
    let state = http
        .state(forewarn::stage::StageDeps {
            store: db.store.clone(),
            metrics: forewarn::observability::Metrics::new(),
        })
        .unwrap();
    tokio::spawn(http.serve(state, shutdown));
    (addr, trigger)
}

/// Every `http://<addr>/l/…` link in `text`, in order.
fn links_in(text: &str, addr: SocketAddr) -> Vec<String> {
    let prefix = format!("http://{addr}/l/");
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&prefix) {
        let link: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || ":/.-".contains(*c))
            .collect();
        found.push(link);
        rest = &rest[at + prefix.len()..];
    }
    found
}

fn part(mail: &serde_json::Value, content_type: &str) -> String {
    mail["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["content_type"] == content_type)
        .unwrap_or_else(|| panic!("no {content_type} part: {mail}"))["text"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn get(url: &str, language: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(language) = language {
        request = request.header("accept-language", language);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn post(url: &str, form: &[(&str, String)]) -> (u16, String) {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The (technician, start) of every choice a page offers.
fn choices(page: &str) -> Vec<(String, String)> {
    let value_after = |from: &str, name: &str| -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let at = from.find(&marker)? + marker.len();
        Some(from[at..].chars().take_while(|c| *c != '"').collect())
    };
    page.split("<form")
        .skip(1)
        .filter_map(|form| {
            Some((
                value_after(form, "technician")?,
                value_after(form, "start")?,
            ))
        })
        .collect()
}

async fn live_booking(pool: &PgPool, ticket: i64) -> Option<(i64, i32, i64, bool)> {
    sqlx::query_as::<_, (i64, i32, chrono::DateTime<Utc>, bool)>(
        "select id, technician_id, lower(slot), confirmed_at is not null from bookings
         where ticket_id = $1 and cancelled_at is null",
    )
    .bind(ticket)
    .fetch_optional(pool)
    .await
    .unwrap()
    .map(|(id, tech, start, confirmed)| (id, tech, start.timestamp_micros(), confirmed))
}

async fn events_of(pool: &PgPool, ticket: i64) -> i64 {
    sqlx::query_scalar("select count(*) from ticket_events where ticket_id = $1")
        .bind(ticket)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_confirms_moves_and_declines_by_link_each_once_in_their_language() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    technician(&pool, "Marek Zieliński", WARSAW).await;
    technician(&pool, "Ewa Lis", (WARSAW.0 + 0.05, WARSAW.1)).await;
    let devices = customer_with_washers(&pool, "pl-PL", 1).await;
    let ticket = book_calls(&db, &devices).await[0];
    let sink = tokio::task::spawn_blocking(SmtpSink::start).await.unwrap();
    // The server first, so the messages' links name its address.
    let mut config = OutreachConfig {
        smtp_url: Some(Secret::new(format!("smtp://127.0.0.1:{}", sink.port))),
        email_from: "forewarn <service@forewarn.example>".into(),
        ..outreach_config()
    };
    let (addr, _server) = serve_links(&db, &config).await;
    config.public_url = format!("http://{addr}");
    let outreach = Outreach::new(db.store.clone(), &config, None).unwrap();
    deliver_all(&outreach, &pool, Duration::from_secs(20)).await;

    // The proposal: three links, the same in both parts, in Polish.
    let mails = sink.received();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let (text, html) = (part(&mails[0], "text/plain"), part(&mails[0], "text/html"));
    let links = links_in(&text, addr);
    assert_eq!(links.len(), 3, "{text}");
    assert_eq!(links_in(&html, addr), links, "{html}");
    assert!(text.contains("Potwierdzam ten termin: "), "{text}");
    let (confirm, reschedule, decline) = (&links[0], &links[1], &links[2]);
    let (booking, technician_id, start, confirmed) = live_booking(&pool, ticket).await.unwrap();
    assert!(!confirmed);

    // Opening shows the visit and changes nothing (a mail scanner may open it).
    let (status, page) = get(confirm, Some("en")).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("lang=\"pl\"") && page.contains("Potwierdź wizytę"),
        "{page}"
    );
    assert!(
        page.contains("Marek") && page.contains("<form method=\"post\">"),
        "{page}"
    );
    assert!(!live_booking(&pool, ticket).await.unwrap().3);

    // Confirming: the booking is confirmed, audited, and a confirmation queued.
    let before = events_of(&pool, ticket).await;
    let (status, page) = post(confirm, &[]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("jest potwierdzona"), "{page}");
    assert_eq!(
        live_booking(&pool, ticket).await,
        Some((booking, technician_id, start, true))
    );
    let (actor, reason): (String, String) = sqlx::query_as(
        "select actor, reason from ticket_events where ticket_id = $1 order by id desc limit 1",
    )
    .bind(ticket)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(actor, "customer");
    assert!(reason.contains("confirmed"), "{reason}");
    assert_eq!(events_of(&pool, ticket).await, before + 1);

    // Used: the same link, or a sibling of the same message, changes nothing.
    for link in [confirm, decline, reschedule] {
        let (status, page) = post(link, &[]).await;
        assert_eq!(status, 409, "{link}: {page}");
        assert!(page.contains("już odpowiedziano"), "{page}");
    }
    assert_eq!(events_of(&pool, ticket).await, before + 1);
    assert_eq!(
        sqlx::query_scalar::<_, String>("select status from tickets where id = $1")
            .bind(ticket)
            .fetch_one(&pool)
            .await
            .unwrap(),
        "booked"
    );

    // The confirmation arrives with links to move or decline.
    deliver_all(&outreach, &pool, Duration::from_secs(20)).await;
    let mails = sink.received();
    assert_eq!(mails.len(), 2, "{mails:?}");
    let text = part(&mails[1], "text/plain");
    assert!(
        mails[1]["subject"]
            .as_str()
            .unwrap()
            .contains("Wizyta potwierdzona")
    );
    let links = links_in(&text, addr);
    assert_eq!(links.len(), 2, "{text}");
    let (reschedule, decline) = (&links[0], &links[1]);

    // Another time: the page offers free times on different days, inside the window.
    let (status, page) = get(reschedule, None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Wybierz inny termin"), "{page}");
    let offered = choices(&page);
    assert!(
        (2..=3).contains(&offered.len()),
        "other days are free: {page}"
    );
    // A time not offered (a forged form) is refused with the times that are.
    let (technician_choice, start_choice) = offered[0].clone();
    let forged_start = (start_choice.parse::<i64>().unwrap() + 7 * MINUTE).to_string();
    let (status, page) = post(
        reschedule,
        &[
            ("technician", technician_choice.clone()),
            ("start", forged_start),
        ],
    )
    .await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("został właśnie zajęty"), "{page}");
    assert_eq!(choices(&page).len(), offered.len(), "{page}");
    // Nor a time on the grid outside every shift (03:00 in Warsaw), or with a stranger.
    let night = (start_choice.parse::<i64>().unwrap() / (86_400 * 1_000_000)) * 86_400 * 1_000_000
        + 2 * 60 * MINUTE;
    for (technician, start) in [
        (technician_choice.clone(), night.to_string()),
        ("999999".to_string(), start_choice.clone()),
        ("x".to_string(), "y".to_string()),
    ] {
        let (status, page) =
            post(reschedule, &[("technician", technician), ("start", start)]).await;
        assert!(status == 409 || status == 200, "{page}");
        if status == 200 {
            // No choice parsed: the page to choose.
            assert!(page.contains("Wybierz inny termin"), "{page}");
        }
    }
    assert_eq!(live_booking(&pool, ticket).await.unwrap().0, booking);
    // The offered one: the visit moves there, confirmed, and the old slot is free.
    let (status, page) = post(
        reschedule,
        &[
            ("technician", technician_choice.clone()),
            ("start", start_choice.clone()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Gotowe"), "{page}");
    let (moved, moved_technician, moved_start, moved_confirmed) =
        live_booking(&pool, ticket).await.unwrap();
    assert_ne!(moved, booking);
    assert_eq!(moved_technician.to_string(), technician_choice);
    assert_eq!(moved_start.to_string(), start_choice);
    assert!(moved_confirmed);
    assert_eq!(
        count(
            &pool,
            "select count(*) from bookings where cancelled_at is not null"
        )
        .await,
        1
    );
    // Reused, the link changes nothing more.
    let (status, _) = post(
        reschedule,
        &[
            ("technician", offered[1].0.clone()),
            ("start", offered[1].1.clone()),
        ],
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(live_booking(&pool, ticket).await.unwrap().0, moved);

    // A forged or altered link: the browser's language, and nothing read or changed.
    let mut tampered = decline.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let (status, page) = get(&tampered, Some("uk-UA,uk;q=0.9")).await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("lang=\"uk\"") && page.contains("недійсне"),
        "{page}"
    );
    let (status, _) = post(&tampered, &[]).await;
    assert_eq!(status, 400);
    // An expired one, genuinely signed: the customer's language.
    let key = db.store.signing_key("links", &[0u8; 32]).await.unwrap();
    let signer = LinkSigner::new(&key, &format!("http://{addr}"), Duration::from_secs(3600));
    let message: i64 = sqlx::query_scalar(
        "select id from outreach where ticket_id = $1 and message_type = 'booking_confirmed'
         order by id desc limit 1",
    )
    .bind(ticket)
    .fetch_one(&pool)
    .await
    .unwrap();
    let expired = signer.url(
        message,
        LinkAction::Decline,
        Utc::now() - chrono::Duration::hours(2),
    );
    let (status, page) = post(&expired, &[]).await;
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("wygasł"), "{page}");
    assert_eq!(
        sqlx::query_scalar::<_, String>("select status from tickets where id = $1")
            .bind(ticket)
            .fetch_one(&pool)
            .await
            .unwrap(),
        "booked"
    );

    // The old confirmation's decline link: that message was answered (by its other link).
    let (status, page) = get(decline, None).await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("już odpowiedziano"), "{page}");
    // The newest confirmation's decline: the ticket is resolved as declined, slot freed.
    deliver_all(&outreach, &pool, Duration::from_secs(20)).await;
    let mails = sink.received();
    let latest = links_in(&part(mails.last().unwrap(), "text/plain"), addr);
    assert_eq!(latest.len(), 2);
    let (status, page) = get(&latest[1], None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Rezygnuję z wizyty"), "{page}");
    let (status, page) = post(&latest[1], &[]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Odwołaliśmy wizytę"), "{page}");
    let (status, outcome): (String, String) =
        sqlx::query_as("select status, outcome from tickets where id = $1")
            .bind(ticket)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), outcome.as_str()),
        ("resolved", "customer_declined")
    );
    assert_eq!(live_booking(&pool, ticket).await, None);
    assert_eq!(count(&pool, "select count(*) from link_answers").await, 3);
}

/// Answers racing on one message (a double click, two devices): one wins, the other
/// changes nothing; and a visit re-planned since its message makes the message's links
/// outdated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_answers_change_a_ticket_once_and_an_outdated_link_changes_nothing() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    technician(&pool, "Marek Zieliński", WARSAW).await;
    technician(&pool, "Ewa Lis", (WARSAW.0 + 0.05, WARSAW.1)).await;
    let devices = customer_with_washers(&pool, "sk", 9).await;
    let tickets = book_calls(&db, &devices).await;
    let config = outreach_config();
    let (addr, _server) = serve_links(&db, &config).await;
    let key = db.store.signing_key("links", &[0u8; 32]).await.unwrap();
    let signer = LinkSigner::new(&key, &format!("http://{addr}"), Duration::from_secs(86_400));
    let proposals: Vec<(i64, i64, chrono::DateTime<Utc>)> = sqlx::query_as(
        "select id, ticket_id, created_at from outreach
         where message_type = 'booking_proposed' order by ticket_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(proposals.len(), tickets.len());

    // Confirm and decline of the same message at once, eight times over.
    for (message, ticket, created) in &proposals[..8] {
        let confirm = signer.url(*message, LinkAction::Confirm, *created);
        let decline = signer.url(*message, LinkAction::Decline, *created);
        let (a, b) = tokio::join!(post(&confirm, &[]), post(&decline, &[]));
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
        let (status, outcome): (String, Option<String>) =
            sqlx::query_as("select status, outcome from tickets where id = $1")
                .bind(ticket)
                .fetch_one(&pool)
                .await
                .unwrap();
        let confirmed = live_booking(&pool, *ticket).await.is_some_and(|b| b.3);
        match (a.0, status.as_str()) {
            (200, "booked") => assert!(confirmed),
            (409, "resolved") => assert_eq!(outcome.as_deref(), Some("customer_declined")),
            other => panic!("confirm answered {other:?}: {a:?} {b:?}"),
        }
    }
    assert_eq!(count(&pool, "select count(*) from link_answers").await, 8);

    // The last ticket's technician falls ill: its visit is re-planned, and the first
    // message's links no longer apply.
    let (message, ticket, created) = proposals[8];
    let (_, technician_id, start, _) = live_booking(&pool, ticket).await.unwrap();
    db.store
        .mark_unavailable(
            technician_id,
            start - 60 * MINUTE,
            Some(start + 24 * 60 * MINUTE),
            "sick",
            t0() + 21 * MINUTE,
            "test",
        )
        .await
        .unwrap();
    for action in [LinkAction::Confirm, LinkAction::Reschedule] {
        let (status, page) = get(&signer.url(message, action, created), None).await;
        assert_eq!(status, 409, "{page}");
        assert!(
            page.contains("lang=\"sk\"") && page.contains("zmenila"),
            "{page}"
        );
    }
    let before = events_of(&pool, ticket).await;
    for action in LinkAction::ALL {
        let (status, page) = post(&signer.url(message, action, created), &[]).await;
        assert_eq!(status, 409, "{page}");
    }
    assert_eq!(events_of(&pool, ticket).await, before);
}

/// A move racing the technician's sick note: either the move wins (the sick note then
/// finds nothing of theirs to cancel, and the customer's new visit stands) or the sick note
/// wins (the link's visit changed: nothing moved) — never a move the sick note undoes, and
/// never a visit left with a technician who is off. A visit about to start can be
/// confirmed but no longer moved or declined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_racing_a_sick_note_and_a_visit_about_to_start() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    technician(&pool, "Marek Zieliński", WARSAW).await;
    technician(&pool, "Ewa Lis", (WARSAW.0 + 0.05, WARSAW.1)).await;
    technician(&pool, "Olga Nowak", (WARSAW.0 - 0.05, WARSAW.1)).await;
    let devices = customer_with_washers(&pool, "pl", 7).await;
    book_calls(&db, &devices).await;
    let config = outreach_config();
    let (addr, _server) = serve_links(&db, &config).await;
    let key = db.store.signing_key("links", &[0u8; 32]).await.unwrap();
    let signer = LinkSigner::new(&key, &format!("http://{addr}"), Duration::from_secs(86_400));
    let proposals: Vec<(i64, i64, chrono::DateTime<Utc>)> = sqlx::query_as(
        "select id, ticket_id, created_at from outreach
         where message_type = 'booking_proposed' order by ticket_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let (mut moved, mut refused) = (0, 0);
    for (round, (message, ticket, created)) in proposals[..6].iter().enumerate() {
        let Some((_, current, start, _)) = live_booking(&pool, *ticket).await else {
            eprintln!("round {round}: re-planned by an earlier sick note");
            continue;
        };
        let link = signer.url(*message, LinkAction::Reschedule, *created);
        let (status, page) = get(&link, None).await;
        assert_eq!(status, 200, "{page}");
        // Another technician's time where one is offered (the case where a sick note that
        // read the old booking could cancel the new one), else a time of the same
        // technician away from the hour they fall ill.
        let offered: Vec<(i32, i64)> = choices(&page)
            .iter()
            .map(|(t, s)| (t.parse::<i32>().unwrap(), s.parse::<i64>().unwrap()))
            .filter(|(t, s)| *t != current || (*s - start).abs() >= 3 * 60 * MINUTE)
            .collect();
        let Some((technician, chosen_start)) = offered
            .iter()
            .find(|(t, _)| *t != current)
            .or(offered.first())
            .map(|(t, s)| (t.to_string(), s.to_string()))
        else {
            eprintln!("round {round}: no time offered away from the sick hour");
            continue;
        };
        let store = db.store.clone();
        // The move's head start varies, so the two meet at different points of the move
        // (one round lets it finish first).
        let head_start = Duration::from_millis([0, 300, 10, 25, 50, 100][round % 6]);
        let sick = async move {
            tokio::time::sleep(head_start).await;
            store
                .mark_unavailable(
                    current,
                    start,
                    Some(start + 60 * MINUTE),
                    "sick",
                    t0() + 21 * MINUTE,
                    "test",
                )
                .await
                .unwrap()
        };
        let form = [
            ("technician", technician.clone()),
            ("start", chosen_start.clone()),
        ];
        let answer = async { post(&link, &form).await };
        let (answered, replanned) = tokio::join!(answer, sick);
        match answered.0 {
            200 => {
                moved += 1;
                let live = live_booking(&pool, *ticket).await.unwrap();
                assert_eq!(live.1.to_string(), technician, "{answered:?}");
                assert_eq!(live.2.to_string(), chosen_start);
                assert!(live.3, "confirmed");
                assert!(!replanned.contains(ticket), "the sick note undid the move");
            }
            409 => {
                refused += 1;
                assert!(replanned.contains(ticket), "{answered:?}");
            }
            other => panic!("{other}: {}", answered.1),
        }
        // Nobody is booked while off, and no ticket has two live visits.
        let off_and_booked = count(
            &pool,
            "select count(*) from bookings b join technician_unavailability u
               on u.technician_id = b.technician_id and u.period && b.slot
             where b.cancelled_at is null",
        )
        .await;
        assert_eq!(off_and_booked, 0);
        let doubled = count(
            &pool,
            "select count(*) from (select ticket_id from bookings where cancelled_at is null
                                   group by ticket_id having count(*) > 1) d",
        )
        .await;
        assert_eq!(doubled, 0);
    }
    eprintln!("move vs sick note: {moved} moves won, {refused} sick notes won");
    assert!(moved + refused >= 3, "{moved} {refused}");
    assert!(
        moved >= 1,
        "no move got ahead of its sick note: the race was not tested"
    );

    // The last visit is about to start (the fleet's clock an hour before it): it can be
    // confirmed, but not moved or declined here.
    let (message, ticket, created) = proposals[6];
    let (_, _, start, _) = live_booking(&pool, ticket).await.unwrap();
    sqlx::query("update devices set last_seen_at = $1")
        .bind(chrono::DateTime::from_timestamp_micros(start - 60 * MINUTE).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    for action in [LinkAction::Decline, LinkAction::Reschedule] {
        let (status, page) = get(&signer.url(message, action, created), None).await;
        assert_eq!(status, 409, "{page}");
        assert!(page.contains("zaraz się zaczyna"), "{page}");
    }
    let (status, _) = post(&signer.url(message, LinkAction::Decline, created), &[]).await;
    assert_eq!(status, 409);
    let (status, page) = post(&signer.url(message, LinkAction::Confirm, created), &[]).await;
    assert_eq!(status, 200, "{page}");
}
