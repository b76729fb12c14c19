//! Signed links (DESIGN.md §Outreach): a message proposing a visit carries one link per
//! answer the customer can give — confirm it, pick another time, decline — each
//! `<public_url>/l/<outreach id>-<action>-<expiry>-<signature>`, the signature a truncated
//! HMAC-SHA256 of the rest. Nothing is stored when a link is made: the same message
//! rendered again (a retry) carries the same links, because the expiry is counted from
//! the message's creation. What a link may still do is decided when it is used
//! (`api::links`): a forged or altered link, one past its expiry, one whose message was
//! already answered, or one about a visit that has since changed, changes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::OutreachError;
use super::channels::{constant_time_eq, hex, hmac_sha256};
use super::config::OutreachConfig;
use crate::store::Store;

/// Bytes of the HMAC kept in a link (128 bits: forging one is out of reach, and the link
/// stays short enough for an SMS).
const SIGNATURE_BYTES: usize = 16;
/// Domain separation: the same key never signs anything else in the same shape.
const CONTEXT: &[u8] = b"forewarn-link-v1:";

/// What a link answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkAction {
    Confirm,
    Reschedule,
    Decline,
}

impl LinkAction {
    pub const ALL: [LinkAction; 3] = [
        LinkAction::Confirm,
        LinkAction::Reschedule,
        LinkAction::Decline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkAction::Confirm => "confirm",
            LinkAction::Reschedule => "reschedule",
            LinkAction::Decline => "decline",
        }
    }

    /// The one letter a link carries.
    fn code(self) -> char {
        match self {
            LinkAction::Confirm => 'c',
            LinkAction::Reschedule => 'r',
            LinkAction::Decline => 'd',
        }
    }

    fn from_code(code: &str) -> Option<LinkAction> {
        LinkAction::ALL
            .into_iter()
            .find(|action| code.len() == 1 && code.starts_with(action.code()))
    }

    pub fn parse(text: &str) -> Option<LinkAction> {
        LinkAction::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
    }
}

/// The answers a message type offers: a proposed or moved visit can be confirmed, moved or
/// declined; a confirmed one moved or declined; nothing else carries links.
pub fn actions_of(message_type: &str) -> &'static [LinkAction] {
    match message_type {
        "booking_proposed" | "rescheduled" => &LinkAction::ALL,
        "booking_confirmed" => &[LinkAction::Reschedule, LinkAction::Decline],
        _ => &[],
    }
}

/// A link whose signature held: which message it answers, how, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkClaim {
    pub outreach_id: i64,
    pub action: LinkAction,
    pub expires_at: DateTime<Utc>,
}

/// Why a link is refused before anything is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Malformed, or its signature does not match: forged, altered or cut short.
    #[error("the link is not valid")]
    Tampered,
    /// Genuine, but past its expiry.
    #[error("the link expired at {0}")]
    Expired(DateTime<Utc>),
}

/// Makes and checks links with one key.
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
    base_url: String,
    ttl: Duration,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner")
            .field("key", &"[redacted]")
            .field("base_url", &self.base_url)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl LinkSigner {
    /// `base_url`: where customers reach the server (`outreach.public_url`), without the
    /// trailing slash.
    pub fn new(key: &[u8], base_url: &str, ttl: Duration) -> LinkSigner {
        LinkSigner {
            key: key.to_vec(),
            base_url: base_url.trim_end_matches('/').to_string(),
            ttl,
        }
    }

    /// The key from `outreach.link_secret`, else the database's (made once, shared by every
    /// replica).
    pub async fn load(store: &Store, config: &OutreachConfig) -> Result<LinkSigner, OutreachError> {
        let key = match &config.link_secret {
            Some(secret) => secret.expose().as_bytes().to_vec(),
            None => {
                let mut fresh = [0u8; 32];
                getrandom::fill(&mut fresh).map_err(|e| OutreachError::Random(e.to_string()))?;
                store.signing_key("links", &fresh).await?
            }
        };
        Ok(LinkSigner::new(&key, &config.public_url, config.link_ttl))
    }

    fn signature(&self, outreach_id: i64, action: LinkAction, expires: i64) -> String {
        let signed = format!("{outreach_id}-{}-{expires}", action.code());
        hex(&hmac_sha256(&self.key, &[CONTEXT, signed.as_bytes()])[..SIGNATURE_BYTES])
    }

    /// The token of a link: valid until `created_at` + the links' lifetime.
    pub fn token(&self, outreach_id: i64, action: LinkAction, created_at: DateTime<Utc>) -> String {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        let expires = created_at
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .timestamp();
        format!(
            "{outreach_id}-{}-{expires}-{}",
            action.code(),
            self.signature(outreach_id, action, expires)
        )
    }

    /// The whole link.
    pub fn url(&self, outreach_id: i64, action: LinkAction, created_at: DateTime<Utc>) -> String {
        format!(
            "{}/l/{}",
            self.base_url,
            self.token(outreach_id, action, created_at)
        )
    }

    /// The links a message of this type carries, in the order they are shown.
    pub fn links_of(
        &self,
        message_type: &str,
        outreach_id: i64,
        created_at: DateTime<Utc>,
    ) -> Vec<(LinkAction, String)> {
        actions_of(message_type)
            .iter()
            .map(|&action| (action, self.url(outreach_id, action, created_at)))
            .collect()
    }

    /// Checks a token: its signature first (nothing unsigned is believed, the expiry
    /// included), then its expiry against `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<LinkClaim, LinkError> {
        let parts: Vec<&str> = token.split('-').collect();
        let [id, code, expires, signature] = parts[..] else {
            return Err(LinkError::Tampered);
        };
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(id) || !digits(expires) {
            return Err(LinkError::Tampered);
        }
        let (Ok(outreach_id), Ok(expires), Some(action)) = (
            id.parse::<i64>(),
            expires.parse::<i64>(),
            LinkAction::from_code(code),
        ) else {
            return Err(LinkError::Tampered);
        };
        let expected = self.signature(outreach_id, action, expires);
        if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
            return Err(LinkError::Tampered);
        }
        let expires_at = DateTime::from_timestamp(expires, 0).ok_or(LinkError::Tampered)?;
        if now >= expires_at {
            return Err(LinkError::Expired(expires_at));
        }
        Ok(LinkClaim {
            outreach_id,
            action,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> LinkSigner {
        LinkSigner::new(
            b"0123456789abcdef0123456789abcdef",
            "https://service.example/",
            Duration::from_secs(7 * 86_400),
        )
    }

    fn created() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_link_verifies_until_it_expires() {
        let signer = signer();
        let url = signer.url(42, LinkAction::Confirm, created());
        let token = url.strip_prefix("https://service.example/l/").unwrap();
        let claim = signer.verify(token, created()).unwrap();
        assert_eq!(claim.outreach_id, 42);
        assert_eq!(claim.action, LinkAction::Confirm);
        assert_eq!(claim.expires_at, created() + chrono::Duration::days(7));
        let later = created() + chrono::Duration::days(7);
        assert_eq!(
            signer.verify(token, later),
            Err(LinkError::Expired(claim.expires_at))
        );
        // The same message renders the same link every time.
        assert_eq!(url, signer.url(42, LinkAction::Confirm, created()));
    }

    #[test]
    fn any_change_to_a_link_is_tampering() {
        let signer = signer();
        let token = signer.token(42, LinkAction::Confirm, created());
        let parts: Vec<&str> = token.split('-').collect();
        let altered = [
            format!("43-{}-{}-{}", parts[1], parts[2], parts[3]),
            format!("{}-d-{}-{}", parts[0], parts[2], parts[3]),
            format!("{}-{}-{}-{}", parts[0], parts[1], 1_900_000_000, parts[3]),
            format!("{}-{}-{}-{}", parts[0], parts[1], parts[2], &parts[3][1..]),
            format!("{}-{}-{}-{}0", parts[0], parts[1], parts[2], &parts[3][1..]),
            token[..token.len() - 1].to_string(),
            format!("{token}-1"),
            String::new(),
            "-----".to_string(),
            "+42-c-1900000000-00".to_string(),
            "99999999999999999999-c-1-00".to_string(),
        ];
        for token in altered {
            assert_eq!(
                signer.verify(&token, created()),
                Err(LinkError::Tampered),
                "{token}"
            );
        }
        // Another key's link is forged.
        let other = LinkSigner::new(b"another key, 32 bytes long......", "x", Duration::ZERO);
        let forged = other.token(42, LinkAction::Confirm, created());
        assert_eq!(signer.verify(&forged, created()), Err(LinkError::Tampered));
    }

    #[test]
    fn messages_offer_the_answers_their_state_allows() {
        assert_eq!(actions_of("booking_proposed").len(), 3);
        assert_eq!(actions_of("rescheduled").len(), 3);
        assert_eq!(
            actions_of("booking_confirmed"),
            &[LinkAction::Reschedule, LinkAction::Decline]
        );
        for other in [
            "proactive_notice",
            "technician_en_route",
            "incident_notice",
            "resolved",
        ] {
            assert!(actions_of(other).is_empty());
        }
        let links = signer().links_of("booking_proposed", 7, created());
        assert_eq!(links.len(), 3);
        assert!(
            links
                .iter()
                .all(|(_, url)| url.starts_with("https://service.example/l/7-"))
        );
    }
}
