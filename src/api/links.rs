//! `/l/{token}`: the pages a customer's signed link opens ([`crate::outreach::links`]), in
//! the customer's language (the browser's, when the link cannot be trusted to say whose
//! it is). `GET` only shows — the answer, the other times free — so a mail scanner that
//! opens links changes nothing; the page's button `POST`s the answer, which
//! [`Dispatcher::answer_link`] writes. A forged or altered link (400), an expired one
//! (410), one whose message was answered already or whose visit has changed (409) gets a
//! page saying so and changes nothing.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::ApiState;
use crate::contract::EpochMicros;
use crate::dispatch::answers::{Alternative, Answered, Standing, standing};
use crate::dispatch::{DispatchConfig, Dispatcher};
use crate::outreach::links::{LinkAction, LinkClaim, LinkError, LinkSigner};
use crate::outreach::render::escape;
use crate::outreach::{OutreachConfig, OutreachError, Templates};
use crate::store::{LinkContext, Store};

/// Every text the pages show (each language must have them all).
pub const PAGE_TEXTS: &[&str] = &[
    "page-title",
    "page-confirm-heading",
    "page-confirm-text",
    "page-confirm-button",
    "page-reschedule-heading",
    "page-reschedule-text",
    "page-reschedule-option",
    "page-no-times",
    "page-decline-heading",
    "page-decline-text",
    "page-decline-button",
    "page-confirmed",
    "page-moved",
    "page-declined",
    "page-invalid",
    "page-expired",
    "page-used",
    "page-changed",
    "page-too-late",
    "page-time-gone",
    "page-unavailable",
];

/// The longest form body read (a choice is two numbers).
const MAX_FORM_BYTES: usize = 1024;

/// What the link pages need: the key, the templates and the planner.
pub struct LinkPages {
    outreach: OutreachConfig,
    signer: tokio::sync::OnceCell<LinkSigner>,
    templates: Templates,
    dispatcher: Dispatcher,
}

impl LinkPages {
    pub fn new(
        store: Store,
        outreach: OutreachConfig,
        dispatch: DispatchConfig,
    ) -> Result<LinkPages, OutreachError> {
        Ok(LinkPages {
            outreach,
            signer: tokio::sync::OnceCell::new(),
            templates: Templates::load()?,
            dispatcher: Dispatcher::new(store, dispatch),
        })
    }

    /// The key, loaded on first use (it may live in the database).
    async fn signer(&self, store: &Store) -> Result<&LinkSigner, OutreachError> {
        self.signer
            .get_or_try_init(|| LinkSigner::load(store, &self.outreach))
            .await
    }
}

pub fn router() -> Router<ApiState> {
    Router::new().route("/l/{token}", get(show).post(answer))
}

/// A page in `language`.
struct Page<'a> {
    templates: &'a Templates,
    language: &'a str,
}

impl Page<'_> {
    fn text(&self, id: &str, vars: &[(&str, String)]) -> String {
        self.templates
            .text(self.language, id, vars)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "a link page's text does not render");
                id.to_string()
            })
    }

    fn respond(&self, status: StatusCode, heading: Option<&str>, body: &str) -> Response {
        let title = self.text("page-title", &[]);
        let heading = heading.map_or(String::new(), |h| format!("<h2>{}</h2>\n", escape(h)));
        let html = format!(
            "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"robots\" content=\"noindex\"><title>{title}</title><style>\
             body{{font-family:system-ui,sans-serif;background:#f3f5f8;color:#1c2430;margin:0}}\
             main{{max-width:34em;margin:3em auto;background:#fff;border-radius:8px;\
             padding:1.5em 2em;box-shadow:0 1px 4px rgba(0,0,0,.12);line-height:1.5}}\
             h1{{font-size:1.1em;color:#1f5fa8;margin:0 0 1em}}h2{{font-size:1.3em}}\
             form{{margin:.5em 0}}button{{font-size:1em;padding:.6em 1.2em;border:0;\
             border-radius:4px;background:#1f5fa8;color:#fff;cursor:pointer}}\
             button.secondary{{background:#8a3030}}</style></head>\n\
             <body><main><h1>{title}</h1>\n{heading}{body}</main></body></html>\n",
            lang = self.templates.language_of(self.language),
            title = escape(&title),
        );
        let mut response = (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                // The token is in the URL: no page it links to may learn it.
                (header::REFERRER_POLICY, "no-referrer"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
                ),
            ],
            Html(html),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("30"));
        }
        response
    }

    /// The store did not answer (503, `Retry-After`): logged with `what` failed.
    fn unavailable(&self, what: &str, error: &dyn std::fmt::Display) -> Response {
        tracing::warn!(%error, "link page: {what}");
        self.respond(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            &self.paragraph("page-unavailable", &[]),
        )
    }

    fn paragraph(&self, id: &str, vars: &[(&str, String)]) -> String {
        format!("<p>{}</p>\n", escape(&self.text(id, vars)))
    }

    /// A form posting to the link itself.
    fn button(&self, label_id: &str, fields: &[(&str, String)], secondary: bool) -> String {
        let hidden: String = fields
            .iter()
            .map(|(name, value)| {
                format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    escape(name),
                    escape(value)
                )
            })
            .collect();
        format!(
            "<form method=\"post\">{hidden}<button type=\"submit\"{}>{}</button></form>\n",
            if secondary {
                " class=\"secondary\""
            } else {
                ""
            },
            escape(&self.text(label_id, &[]))
        )
    }
}

/// The customer's context, as far as the page needs it.
struct Customer<'a> {
    language: &'a str,
    zone: Tz,
}

fn customer(context: &LinkContext) -> Customer<'_> {
    Customer {
        language: &context.language,
        zone: context.timezone.parse().unwrap_or(Tz::UTC),
    }
}

fn slot_text(
    templates: &Templates,
    customer: &Customer<'_>,
    start: EpochMicros,
    end: EpochMicros,
) -> String {
    let (Some(start), Some(end)) = (
        DateTime::<Utc>::from_timestamp_micros(start),
        DateTime::<Utc>::from_timestamp_micros(end),
    ) else {
        return String::new();
    };
    templates
        .slot_text(customer.language, customer.zone, start, end)
        .unwrap_or_default()
}

/// What the link says, or the page refusing it.
async fn claim_of(
    state: &ApiState,
    pages: &LinkPages,
    token: &str,
    headers: &HeaderMap,
) -> Result<(LinkClaim, Option<LinkContext>), Response> {
    let accepted = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let browser = Page {
        templates: &pages.templates,
        language: pages.templates.language_accepted(accepted),
    };
    let unavailable =
        |error: &dyn std::fmt::Display| browser.unavailable("the store does not answer", error);
    let signer = pages
        .signer(&state.store)
        .await
        .map_err(|e| unavailable(&e))?;
    match signer.verify(token, Utc::now()) {
        Ok(claim) => {
            let context = state
                .store
                .link_context(claim.outreach_id)
                .await
                .map_err(|e| unavailable(&e))?;
            Ok((claim, context))
        }
        Err(LinkError::Tampered) => {
            tracing::info!("link page: a link that is not ours");
            Err(browser.respond(
                StatusCode::BAD_REQUEST,
                None,
                &browser.paragraph("page-invalid", &[]),
            ))
        }
        Err(LinkError::Expired(_)) => {
            // Genuine: its message says whose language to answer in.
            let (id, _) = token.split_once('-').unwrap_or(("", ""));
            let context = match id.parse::<i64>() {
                Ok(id) => state.store.link_context(id).await.ok().flatten(),
                Err(_) => None,
            };
            let language = context
                .as_ref()
                .map_or(browser.language, |c| c.language.as_str());
            let page = Page {
                templates: &pages.templates,
                language,
            };
            Err(page.respond(StatusCode::GONE, None, &page.paragraph("page-expired", &[])))
        }
    }
}

/// The page of a link that cannot answer.
fn refused(page: &Page<'_>, standing: &Standing) -> Response {
    match standing {
        Standing::Answered(answer) => page.respond(
            StatusCode::CONFLICT,
            None,
            &page.paragraph("page-used", &[("action", answer.action.clone())]),
        ),
        Standing::Changed => page.respond(
            StatusCode::CONFLICT,
            None,
            &page.paragraph("page-changed", &[]),
        ),
        Standing::TooLate => page.respond(
            StatusCode::CONFLICT,
            None,
            &page.paragraph("page-too-late", &[]),
        ),
        Standing::Unknown | Standing::Open => page.respond(
            StatusCode::NOT_FOUND,
            None,
            &page.paragraph("page-invalid", &[]),
        ),
    }
}

async fn show(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(pages) = state.links.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (claim, context) = match claim_of(&state, &pages, &token, &headers).await {
        Ok(claimed) => claimed,
        Err(page) => return page,
    };
    let language = context.as_ref().map_or("en", |c| c.language.as_str());
    let page = Page {
        templates: &pages.templates,
        language,
    };
    let now = match super::clock(&state).await {
        Ok(now) => now,
        Err(error) => return page.unavailable("the store does not answer", &error),
    };
    let standing = standing(context.as_ref(), claim.action, now);
    let (Standing::Open, Some(context)) = (&standing, context.as_ref()) else {
        return refused(&page, &standing);
    };
    let who = customer(context);
    let ticket = context.ticket.as_ref();
    let live = ticket.and_then(|t| t.live.as_ref());
    let current = live.map_or(String::new(), |b| {
        slot_text(&pages.templates, &who, b.start, b.end)
    });
    let technician = live.map_or(String::new(), |b| b.technician.clone());
    match claim.action {
        LinkAction::Confirm => page.respond(
            StatusCode::OK,
            Some(&page.text("page-confirm-heading", &[])),
            &format!(
                "{}{}",
                page.paragraph(
                    "page-confirm-text",
                    &[("technician", technician), ("slot", current)]
                ),
                page.button("page-confirm-button", &[], false)
            ),
        ),
        LinkAction::Decline => page.respond(
            StatusCode::OK,
            Some(&page.text("page-decline-heading", &[])),
            &format!(
                "{}{}",
                page.paragraph("page-decline-text", &[]),
                page.button("page-decline-button", &[], true)
            ),
        ),
        LinkAction::Reschedule => match pages.dispatcher.alternatives(context, now).await {
            Ok(alternatives) => {
                let body = choices(
                    &page,
                    &pages.templates,
                    context,
                    &alternatives,
                    "page-reschedule-text",
                    &current,
                );
                page.respond(
                    StatusCode::OK,
                    Some(&page.text("page-reschedule-heading", &[])),
                    &body,
                )
            }
            Err(error) => page.unavailable("no alternatives", &error),
        },
    }
}

/// The other times as buttons, or how to ask for one when there is none.
fn choices(
    page: &Page<'_>,
    templates: &Templates,
    context: &LinkContext,
    alternatives: &[Alternative],
    intro: &str,
    current: &str,
) -> String {
    let reference = context
        .ticket
        .as_ref()
        .map_or(String::new(), |t| format!("FW-{}", t.id));
    if alternatives.is_empty() {
        return page.paragraph("page-no-times", &[("reference", reference)]);
    }
    let who = customer(context);
    let mut body = page.paragraph(intro, &[("slot", current.to_string())]);
    for alternative in alternatives {
        let label = page.text(
            "page-reschedule-option",
            &[
                (
                    "slot",
                    slot_text(templates, &who, alternative.start, alternative.end),
                ),
                ("technician", alternative.technician.clone()),
            ],
        );
        body.push_str(&format!(
            "<form method=\"post\"><input type=\"hidden\" name=\"technician\" value=\"{}\">\
             <input type=\"hidden\" name=\"start\" value=\"{}\">\
             <button type=\"submit\">{}</button></form>\n",
            alternative.technician_id,
            alternative.start,
            escape(&label)
        ));
    }
    body
}

async fn answer(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(pages) = state.links.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (claim, context) = match claim_of(&state, &pages, &token, &headers).await {
        Ok(claimed) => claimed,
        Err(page) => return page,
    };
    let language = context
        .as_ref()
        .map_or("en".to_string(), |c| c.language.clone());
    let page = Page {
        templates: &pages.templates,
        language: &language,
    };
    let choice = if claim.action == LinkAction::Reschedule {
        let form = &body[..body.len().min(MAX_FORM_BYTES)];
        let mut technician = None;
        let mut start = None;
        for (name, value) in url::form_urlencoded::parse(form) {
            match name.as_ref() {
                "technician" => technician = value.parse::<i32>().ok(),
                "start" => start = value.parse::<i64>().ok(),
                _ => {}
            }
        }
        match (technician, start) {
            (Some(technician), Some(start)) => Some((technician, start)),
            // No choice made: the page to make one.
            _ => return show(State(state), Path(token), headers).await,
        }
    } else {
        None
    };
    let unavailable = |error: &dyn std::fmt::Display| page.unavailable("the answer failed", error);
    let now = match super::clock(&state).await {
        Ok(now) => now,
        Err(error) => return unavailable(&error),
    };
    let answered = match pages
        .dispatcher
        .answer_link(claim.outreach_id, claim.action, choice, now)
        .await
    {
        Ok(answered) => answered,
        Err(error) => return unavailable(&error),
    };
    let Some(context) = context else {
        return refused(&page, &Standing::Unknown);
    };
    let who = customer(&context);
    let technician_of = |id: i64| {
        context
            .ticket
            .as_ref()
            .and_then(|t| t.live.as_ref())
            .filter(|b| b.id == id)
            .map(|b| {
                (
                    b.technician.clone(),
                    slot_text(&pages.templates, &who, b.start, b.end),
                )
            })
            .unwrap_or_default()
    };
    match answered {
        Answered::Confirmed { booking_id } => {
            let (technician, slot) = technician_of(booking_id);
            page.respond(
                StatusCode::OK,
                None,
                &page.paragraph(
                    "page-confirmed",
                    &[("technician", technician), ("slot", slot)],
                ),
            )
        }
        Answered::Declined => {
            page.respond(StatusCode::OK, None, &page.paragraph("page-declined", &[]))
        }
        Answered::Moved { to, .. } => page.respond(
            StatusCode::OK,
            None,
            &page.paragraph(
                "page-moved",
                &[
                    ("technician", to.technician.clone()),
                    ("slot", slot_text(&pages.templates, &who, to.start, to.end)),
                ],
            ),
        ),
        Answered::Refused(standing) => refused(&page, &standing),
        Answered::TimeGone(alternatives) => {
            let live = context.ticket.as_ref().and_then(|t| t.live.as_ref());
            let current = live.map_or(String::new(), |b| {
                slot_text(&pages.templates, &who, b.start, b.end)
            });
            let body = choices(
                &page,
                &pages.templates,
                &context,
                &alternatives,
                "page-time-gone",
                &current,
            );
            page.respond(StatusCode::CONFLICT, None, &body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outreach::render::LANGUAGES;

    #[test]
    fn every_page_text_renders_in_every_language() {
        let templates = Templates::load().unwrap();
        let vars = [
            ("technician", "Marek".to_string()),
            (
                "slot",
                "Tuesday, November 24, 2:00 PM – 3:00 PM".to_string(),
            ),
            ("reference", "FW-42".to_string()),
            ("action", "reschedule".to_string()),
        ];
        for (language, _) in LANGUAGES {
            for id in PAGE_TEXTS {
                let text = templates
                    .text(language, id, &vars)
                    .unwrap_or_else(|e| panic!("{language} {id}: {e}"));
                assert!(
                    !text.contains('{') && !text.trim().is_empty(),
                    "{language} {id}: {text}"
                );
            }
            for action in LinkAction::ALL {
                let label = templates
                    .text(language, &format!("link-{}", action.as_str()), &[])
                    .unwrap();
                assert!(!label.is_empty());
            }
        }
    }

    #[test]
    fn the_browsers_language_is_used_when_the_link_says_nothing() {
        let templates = Templates::load().unwrap();
        assert_eq!(templates.language_accepted("pl-PL,pl;q=0.9,en;q=0.5"), "pl");
        assert_eq!(templates.language_accepted("de-DE, sk;q=0.8"), "sk");
        assert_eq!(templates.language_accepted("fr"), "en");
        assert_eq!(templates.language_accepted("pl;q=0, uk;q=0.5"), "uk");
        assert_eq!(templates.language_accepted(""), "en");
    }
}
