//! The field around the simulated fleet, for the demo's closed loop.
//!
//! - **Technicians** turn up for the visits forewarn books: the booked tickets are read back
//!   from forewarn's API (`GET /api/v1/tickets?status=booked`), and when the simulated clock
//!   reaches a visit's slot the device is visited ([`crate::sim::DeviceStream::visit`]: a
//!   component wearing out is replaced, so its failure never happens and the truth marks it
//!   `prevented`) and what was found is recorded through the API (`en_route`, `on_site`,
//!   `resolved` with `fault_confirmed` + component or `no_fault_found`).
//! - **Customers** get forewarn's SMS, push and webhook messages on a gateway this module
//!   serves (the demo points `outreach.sms_url`/`push_url`/`webhook_url` at it). Some open a
//!   signed link and answer it (confirm, another time, decline), as a browser would: `GET`
//!   the page, `POST` its form; some reply by SMS through `POST /api/v1/inbound/sms`, signed
//!   with the inbound secret and quoting the message's reference.
//!
//! Which customer does what is drawn from the message's id and the fleet's seed, so a run
//! is repeatable for the same messages.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use forewarn::outreach::channels::{SIGNATURE_HEADER, signature, unix_seconds};
use serde::Deserialize;

use crate::sim::VisitFinding;

/// Where forewarn's API is and how to reach it.
#[derive(Debug, Clone)]
pub struct FieldOptions {
    /// The server's base URL (`http://127.0.0.1:8080`).
    pub api_url: String,
    /// An API key that may read and move tickets (`integration`).
    pub api_key: String,
    /// `outreach.inbound_secret`, to sign customers' replies; none: nobody replies.
    pub inbound_secret: Option<String>,
    /// Serve the customers' message gateway here (`POST /<channel>`).
    pub gateway: Option<SocketAddr>,
    pub seed: u64,
    pub habits: CustomerHabits,
}

/// How the simulated customers treat forewarn's messages: the share of messages with links
/// answered each way, the share replied to, and how long they take to read one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomerHabits {
    pub confirm: f64,
    pub reschedule: f64,
    pub decline: f64,
    pub reply: f64,
    /// A message is read after 0.5 s plus up to this long.
    pub reading: Duration,
}

impl Default for CustomerHabits {
    fn default() -> Self {
        CustomerHabits {
            confirm: 0.35,
            reschedule: 0.10,
            decline: 0.05,
            reply: 0.12,
            reading: Duration::from_secs(4),
        }
    }
}

/// What the field did, for the log and the demo's summary.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FieldReport {
    pub visits: u64,
    pub prevented: u64,
    pub repaired: u64,
    pub nothing_found: u64,
    pub messages_received: u64,
    pub confirmed: u64,
    pub rescheduled: u64,
    pub declined: u64,
    pub replies: u64,
    /// Calls forewarn refused or that failed (a visit whose ticket moved meanwhile: 409).
    pub api_errors: u64,
}

/// A booked visit as forewarn's ticket list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BookedVisit {
    pub ticket_id: i64,
    pub device: String,
    /// The failure mode's component (`None` for `unknown`, `silent`, `critical`).
    pub component: Option<String>,
    pub slot_start: i64,
}

#[derive(Debug, Deserialize)]
struct TicketPage {
    items: Vec<TicketRow>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TicketRow {
    id: i64,
    device: String,
    failure_mode: String,
    slot_start: Option<chrono::DateTime<chrono::Utc>>,
}

/// A message as forewarn's HTTP channels post it.
#[derive(Debug, Deserialize)]
struct Delivered {
    id: String,
    to: Option<String>,
    text: String,
    reference: Option<String>,
}

/// The field: shared by the publishing loop (visits due), the poller and the gateway.
#[derive(Clone)]
pub struct Field {
    options: Arc<FieldOptions>,
    http: reqwest::Client,
    booked: Arc<Mutex<BTreeMap<i64, BookedVisit>>>,
    visited: Arc<Mutex<HashSet<i64>>>,
    /// Ids of the messages received (a provider's retry delivers once).
    received: Arc<Mutex<HashSet<String>>>,
    report: Arc<Mutex<FieldReport>>,
}

/// Components that name no part: the technician looks at the whole device.
const NO_COMPONENT: [&str; 3] = ["unknown", "silent", "critical"];

impl std::fmt::Debug for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Field")
            .field("api_url", &self.options.api_url)
            .field("gateway", &self.options.gateway)
            .finish_non_exhaustive()
    }
}

impl Field {
    pub fn new(options: FieldOptions) -> anyhow::Result<Field> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Field {
            options: Arc::new(options),
            http,
            booked: Arc::default(),
            visited: Arc::default(),
            received: Arc::default(),
            report: Arc::default(),
        })
    }

    pub fn report(&self) -> FieldReport {
        self.report.lock().expect("field report").clone()
    }

    fn count(&self, bump: impl FnOnce(&mut FieldReport)) {
        bump(&mut self.report.lock().expect("field report"));
    }

    /// Starts the poller of booked visits and the customers' gateway; both stop with the
    /// returned handles' abort (or the process).
    pub async fn start(&self) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut tasks = Vec::new();
        let poller = self.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if let Err(error) = poller.poll_bookings().await {
                    poller.count(|r| r.api_errors += 1);
                    tracing::warn!(error = %format!("{error:#}"), "field: reading bookings failed");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
        if let Some(address) = self.options.gateway {
            let listener = tokio::net::TcpListener::bind(address).await?;
            let router = axum::Router::new()
                .route("/{channel}", axum::routing::post(receive))
                .with_state(self.clone());
            tracing::info!(%address, "field: customers' message gateway");
            tasks.push(tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%error, "field: gateway stopped");
                }
            }));
        }
        Ok(tasks)
    }

    /// Replaces the known bookings with what forewarn has booked now (moved and cancelled
    /// visits drop out).
    async fn poll_bookings(&self) -> anyhow::Result<()> {
        let mut booked = BTreeMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = self
                .http
                .get(format!("{}/api/v1/tickets", self.options.api_url))
                .bearer_auth(&self.options.api_key)
                .query(&[("status", "booked"), ("limit", "500")]);
            if let Some(cursor) = &cursor {
                request = request.query(&[("cursor", cursor)]);
            }
            let response = request.send().await?.error_for_status()?;
            let page: TicketPage = serde_json::from_slice(&response.bytes().await?)?;
            for row in page.items {
                let Some(slot_start) = row.slot_start else {
                    continue;
                };
                let component = row
                    .failure_mode
                    .split_once('/')
                    .map(|(_, c)| c.to_string())
                    .filter(|c| !NO_COMPONENT.contains(&c.as_str()));
                booked.insert(
                    row.id,
                    BookedVisit {
                        ticket_id: row.id,
                        device: row.device,
                        component,
                        slot_start: slot_start.timestamp_micros(),
                    },
                );
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        *self.booked.lock().expect("bookings") = booked;
        Ok(())
    }

    /// Visits whose slot has begun by simulated time `t`, each handed out once.
    pub fn due(&self, t: i64) -> Vec<BookedVisit> {
        let booked = self.booked.lock().expect("bookings");
        let mut visited = self.visited.lock().expect("visited");
        booked
            .values()
            .filter(|visit| visit.slot_start <= t && visited.insert(visit.ticket_id))
            .cloned()
            .collect()
    }

    /// Records a visit's finding through the API: en route, on site, resolved.
    pub fn record(&self, visit: BookedVisit, finding: VisitFinding) {
        self.count(|r| {
            r.visits += 1;
            match finding {
                VisitFinding::Prevented(_) => r.prevented += 1,
                VisitFinding::Repaired(_) => r.repaired += 1,
                VisitFinding::NothingFound => r.nothing_found += 1,
            }
        });
        let field = self.clone();
        tokio::spawn(async move {
            let resolved = match finding {
                VisitFinding::Prevented(component) | VisitFinding::Repaired(component) => {
                    serde_json::json!({"to": "resolved", "outcome": "fault_confirmed",
                        "component": component, "action": "replaced",
                        "reason": "simulated technician"})
                }
                VisitFinding::NothingFound => serde_json::json!({"to": "resolved",
                    "outcome": "no_fault_found", "reason": "simulated technician"}),
            };
            for step in [
                serde_json::json!({"to": "en_route"}),
                serde_json::json!({"to": "on_site"}),
                resolved,
            ] {
                if let Err(error) = field.transition(visit.ticket_id, &step).await {
                    field.count(|r| r.api_errors += 1);
                    tracing::warn!(ticket = visit.ticket_id, error = %format!("{error:#}"),
                        "field: recording the visit failed");
                    return;
                }
            }
            tracing::info!(ticket = visit.ticket_id, device = %visit.device, ?finding,
                "field: visit recorded");
        });
    }

    async fn transition(&self, ticket_id: i64, step: &serde_json::Value) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!(
                "{}/api/v1/tickets/{ticket_id}/transitions",
                self.options.api_url
            ))
            .bearer_auth(&self.options.api_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(step.to_string())
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            anyhow::bail!("{status}: {}", text.chars().take(300).collect::<String>());
        }
        Ok(())
    }

    /// What the customer who got `message` does, after reading it a little later.
    async fn customer_acts(&self, message: Delivered) {
        let draw = |salt: u64| unit_draw(self.options.seed ^ salt, &message.id);
        let habits = self.options.habits;
        tokio::time::sleep(Duration::from_millis(500) + habits.reading.mul_f64(draw(1))).await;
        let links = links_in(&message.text);
        if links.len() == 3 {
            let choice = draw(2);
            let (link, action) = if choice < habits.confirm {
                (links[0].as_str(), "confirm")
            } else if choice < habits.confirm + habits.reschedule {
                (links[1].as_str(), "reschedule")
            } else if choice < habits.confirm + habits.reschedule + habits.decline {
                (links[2].as_str(), "decline")
            } else {
                ("", "")
            };
            if !action.is_empty() {
                match self.answer_link(link, action).await {
                    Ok(true) => self.count(|r| match action {
                        "confirm" => r.confirmed += 1,
                        "reschedule" => r.rescheduled += 1,
                        _ => r.declined += 1,
                    }),
                    Ok(false) => {}
                    Err(error) => {
                        self.count(|r| r.api_errors += 1);
                        tracing::warn!(error = %format!("{error:#}"), "field: a link answer failed");
                    }
                }
            }
        }
        if draw(3) < habits.reply
            && let (Some(secret), Some(reference), Some(from)) = (
                self.options.inbound_secret.as_deref(),
                message.reference.as_deref(),
                message.to.as_deref(),
            )
        {
            let texts = [
                "Can the technician call before coming? Thanks",
                "Is it safe to keep using it until the visit?",
                "Could you come in the afternoon instead?",
            ];
            let text = format!(
                "{} {reference}",
                texts[(draw(4) * texts.len() as f64) as usize % texts.len()]
            );
            match self.reply(secret, &message.id, from, &text).await {
                Ok(()) => self.count(|r| r.replies += 1),
                Err(error) => {
                    self.count(|r| r.api_errors += 1);
                    tracing::warn!(error = %format!("{error:#}"), "field: a reply failed");
                }
            }
        }
    }

    /// Opens a link's page and presses its button (another time: the first one offered).
    /// `Ok(false)`: the page offered nothing to press (expired, used, changed, no times).
    async fn answer_link(&self, link: &str, action: &str) -> anyhow::Result<bool> {
        let page = self.http.get(link).send().await?;
        if !page.status().is_success() {
            return Ok(false);
        }
        let html = page.text().await?;
        let form: Vec<(&str, String)> = if action == "reschedule" {
            match (
                hidden_value(&html, "technician"),
                hidden_value(&html, "start"),
            ) {
                (Some(technician), Some(start)) => {
                    vec![("technician", technician), ("start", start)]
                }
                _ => return Ok(false),
            }
        } else if html.contains("<form method=\"post\">") {
            Vec::new()
        } else {
            return Ok(false);
        };
        let answered = self.http.post(link).form(&form).send().await?;
        Ok(answered.status().is_success())
    }

    async fn reply(&self, secret: &str, id: &str, from: &str, text: &str) -> anyhow::Result<()> {
        let body = serde_json::to_vec(&serde_json::json!({
            "id": format!("reply-{id}"), "from": from, "text": text,
        }))?;
        let response = self
            .http
            .post(format!("{}/api/v1/inbound/sms", self.options.api_url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(secret, unix_seconds(), &body))
            .body(body)
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "inbound reply: {status}");
        Ok(())
    }
}

/// `POST /<channel>`: forewarn delivering a message to a customer's phone or app.
async fn receive(
    State(field): State<Field>,
    Path(_channel): Path<String>,
    Json(message): Json<Delivered>,
) -> StatusCode {
    // A provider retrying the same message (same id) delivers it once.
    if !field
        .received
        .lock()
        .expect("received")
        .insert(message.id.clone())
    {
        return StatusCode::OK;
    }
    field.count(|r| r.messages_received += 1);
    let customers = field.clone();
    tokio::spawn(async move { customers.customer_acts(message).await });
    StatusCode::OK
}

/// A number in [0, 1) from a seed and a text (FNV-1a, then a SplitMix64 finish).
fn unit_draw(seed: u64, text: &str) -> f64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for byte in text.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// The signed links in a message's text, in order (confirm, another time, decline).
fn links_in(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|word| word.starts_with("http") && word.contains("/l/"))
        .map(str::to_string)
        .collect()
}

/// The value of the first hidden input named `name` in a page.
fn hidden_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_form_values_are_found() {
        let text = "Hello\n\nConfirm this time: http://127.0.0.1:8080/l/abc.def\n\
                    Choose another time: http://127.0.0.1:8080/l/ghi\n\
                    I do not want this visit: http://127.0.0.1:8080/l/jkl\n\nBye";
        assert_eq!(
            links_in(text),
            [
                "http://127.0.0.1:8080/l/abc.def",
                "http://127.0.0.1:8080/l/ghi",
                "http://127.0.0.1:8080/l/jkl"
            ]
        );
        let html = "<form method=\"post\"><input type=\"hidden\" name=\"technician\" \
                    value=\"7\"><input type=\"hidden\" name=\"start\" value=\"1700\">";
        assert_eq!(hidden_value(html, "technician").as_deref(), Some("7"));
        assert_eq!(hidden_value(html, "start").as_deref(), Some("1700"));
        assert_eq!(hidden_value(html, "nothing"), None);
    }

    #[test]
    fn draws_are_uniform_enough_and_repeatable() {
        let draws: Vec<f64> = (0..10_000)
            .map(|i| unit_draw(1, &format!("msg-{i}")))
            .collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let below = draws.iter().filter(|d| **d < 0.35).count();
        assert!(
            (3_200..3_800).contains(&below),
            "{below} of 10,000 below 0.35"
        );
        assert_eq!(unit_draw(1, "msg-1"), unit_draw(1, "msg-1"));
    }
}
