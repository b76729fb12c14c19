//! `POST /api/v1/inbound/{channel}`: a customer's SMS or email reply, delivered by the
//! provider's inbound webhook, signed like forewarn's own webhooks (`Forewarn-Signature:
//! t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, keyed by
//! `outreach.inbound_secret`). Threaded onto its ticket by the reference it quotes, else by
//! the sender, and queued for a dispatcher (`Store::store_reply`). A provider retrying the
//! same message (same `id`) stores one reply. Nothing is dropped for not threading.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use serde::Deserialize;

use super::ApiState;
use super::problem::HttpError;
use crate::outreach::channels::{SIGNATURE_HEADER, constant_time_eq, signature_hex, unix_seconds};
use crate::store::{InboundReply, Reference, StoredReply};

/// How far a signature's time may be from ours (a replayed body is refused after it).
pub const SIGNATURE_TOLERANCE_S: u64 = 300;
/// The longest reply kept (longer: refused, so the provider can tell).
pub const MAX_TEXT_CHARS: usize = 100_000;

pub fn router() -> Router<ApiState> {
    Router::new().route("/inbound/{channel}", post(inbound))
}

/// The provider's JSON; every field is checked by hand so a rejection names it.
#[derive(Debug, Deserialize)]
struct Body {
    id: Option<serde_json::Value>,
    from: Option<serde_json::Value>,
    text: Option<serde_json::Value>,
    subject: Option<serde_json::Value>,
}

fn string_field(
    value: Option<serde_json::Value>,
    field: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, HttpError> {
    match value {
        None | Some(serde_json::Value::Null) if !required => Ok(None),
        None | Some(serde_json::Value::Null) => {
            Err(HttpError::rejected(field, "required, a string"))
        }
        Some(serde_json::Value::String(s)) => {
            if required && s.trim().is_empty() {
                return Err(HttpError::rejected(field, "must not be empty"));
            }
            if s.chars().count() > max {
                return Err(HttpError::rejected(
                    field,
                    format!("at most {max} characters"),
                ));
            }
            Ok(Some(s))
        }
        Some(_) => Err(HttpError::rejected(field, "must be a string")),
    }
}

async fn inbound(
    State(state): State<ApiState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<StoredReply>, HttpError> {
    if !matches!(channel.as_str(), "sms" | "email") {
        return Err(HttpError::NotFound {
            detail: format!("no inbound channel {channel:?} (sms, email)"),
        });
    }
    let Some(secret) = state.inbound_secret.as_ref() else {
        return Err(HttpError::Unauthorized {
            detail: "inbound replies are not accepted: outreach.inbound_secret is not set"
                .to_string(),
        });
    };
    verify(
        headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()),
        secret.expose(),
        &body,
        unix_seconds(),
    )?;
    let parsed: Body = serde_json::from_slice(&body)
        .map_err(|e| HttpError::rejected("body", format!("not a JSON object: {e}")))?;
    let id = string_field(parsed.id, "id", 200, true)?.unwrap_or_default();
    let from = string_field(parsed.from, "from", 320, true)?.unwrap_or_default();
    let text = string_field(parsed.text, "text", MAX_TEXT_CHARS, true)?.unwrap_or_default();
    let subject = string_field(parsed.subject, "subject", 1000, false)?;
    let reference = subject
        .as_deref()
        .and_then(find_reference)
        .or_else(|| find_reference(&text));
    let stored = state
        .store
        .store_reply(&InboundReply {
            provider_id: format!("{channel}:{id}"),
            channel: channel.clone(),
            sender: from.trim().to_string(),
            subject,
            body: text,
            reference,
        })
        .await?;
    tracing::info!(
        reply = stored.id,
        ticket = ?stored.ticket_id,
        queue = %stored.queue,
        threaded_by = %stored.threaded_by,
        "customer reply"
    );
    Ok(Json(stored))
}

/// Checks `Forewarn-Signature` against the body: the right key, and a time within
/// [`SIGNATURE_TOLERANCE_S`] of `now`.
pub fn verify(header: Option<&str>, secret: &str, body: &[u8], now: u64) -> Result<(), HttpError> {
    let unauthorized = |detail: &str| HttpError::Unauthorized {
        detail: detail.to_string(),
    };
    let header = header.ok_or_else(|| unauthorized("no Forewarn-Signature header"))?;
    let mut time = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => time = t.parse::<u64>().ok(),
            Some(("v1", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(time), Some(signature)) = (time, signature) else {
        return Err(unauthorized(
            "Forewarn-Signature must be t=<unix seconds>,v1=<hex HMAC-SHA256>",
        ));
    };
    if time.abs_diff(now) > SIGNATURE_TOLERANCE_S {
        return Err(unauthorized(
            "the signature's time is more than 5 minutes from ours (a replay, or a clock off)",
        ));
    }
    let expected = signature_hex(secret, time, body);
    if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(unauthorized("the signature does not match the body"));
    }
    Ok(())
}

/// The first `FW-<ticket>` or `FW-I<incident>` in `text` (any case).
pub fn find_reference(text: &str) -> Option<Reference> {
    let upper = text.to_ascii_uppercase();
    let mut rest = upper.as_str();
    while let Some(at) = rest.find("FW-") {
        let after = &rest[at + 3..];
        let (incident, digits_from) = match after.strip_prefix('I') {
            Some(stripped) => (true, stripped),
            None => (false, after),
        };
        let digits: String = digits_from
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        if let Ok(id) = digits.parse::<i64>() {
            return Some(if incident {
                Reference::Incident(id)
            } else {
                Reference::Ticket(id)
            });
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outreach::channels::signature;

    #[test]
    fn references_are_found_in_any_case_and_wording() {
        assert_eq!(
            find_reference("Tak, pasuje. fw-42"),
            Some(Reference::Ticket(42))
        );
        assert_eq!(
            find_reference("Re: [FW-I7] outage"),
            Some(Reference::Incident(7))
        );
        assert_eq!(
            find_reference("FW- nothing FW-x FW-9"),
            Some(Reference::Ticket(9))
        );
        assert_eq!(find_reference("no reference"), None);
        assert_eq!(find_reference("FW-99999999999999999999999"), None);
    }

    #[test]
    fn a_signature_must_match_the_body_and_be_recent() {
        let body = br#"{"id":"1"}"#;
        let now = 1_800_000_000;
        let good = signature("secret-secret-secret", now, body);
        assert!(verify(Some(&good), "secret-secret-secret", body, now + 10).is_ok());
        assert!(verify(Some(&good), "another-secret-value", body, now).is_err());
        assert!(verify(Some(&good), "secret-secret-secret", b"{}", now).is_err());
        assert!(verify(Some(&good), "secret-secret-secret", body, now + 301).is_err());
        assert!(verify(None, "secret-secret-secret", body, now).is_err());
        assert!(verify(Some("v1=abc"), "secret-secret-secret", body, now).is_err());
    }
}
