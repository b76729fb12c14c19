//! The `outreach` section: the worker pool's pace, retries, fallback, and the channels'
//! endpoints and secrets.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::rules::{period_rule, rule, show};
use crate::config::{ConfigError, optional_duration};

/// A credential: read from the configuration file or the environment
/// (`FOREWARN_OUTREACH__SIGNING_SECRET`), never printed — `Debug` and `Serialize` show `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

/// The outreach stage of `serve` and `forewarn outreach`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutreachConfig {
    /// An idle worker looks for due messages this often; `"off"` disables the stage.
    #[serde(with = "optional_duration")]
    pub interval: Option<Duration>,
    /// Workers of this process; each claims its own batch (`FOR UPDATE SKIP LOCKED`).
    pub workers: usize,
    /// Messages a worker claims at once.
    pub batch: usize,
    /// Messages of a batch in flight to the providers at once.
    pub send_concurrency: usize,
    /// A claimed message not finished by then (its worker died) is claimed again, with the
    /// same idempotency key.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Attempts over all channels before a message is marked failed.
    pub max_attempts: u32,
    /// Failed attempts on one channel before the customer's next channel is tried.
    pub fallback_after: u32,
    /// The retry delay: `backoff_base × 2^(attempt − 1)`, at most `backoff_max`, with jitter
    /// (a random half of it taken off, so a burst of failures does not retry in step).
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// How long one send may take (connection included).
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Deliver to the log (a `tracing` line with the rendered text) when no other channel
    /// of the customer can: the demo's channel. Off in production, where a message no
    /// channel can carry is marked failed.
    pub log_channel: bool,
    /// Hold routine messages through the customer's quiet hours (judged on the wall clock,
    /// in the customer's zone). The demo turns it off: its customers live on an accelerated
    /// clock, and a newcomer trying it at night would see nothing delivered.
    pub quiet_hours: bool,
    /// Email over SMTP, a lettre URL: `smtp://host:25` (plain), `smtp://host:587?tls=required`
    /// (STARTTLS), `smtps://user:password@host:465`. Unset: no email channel.
    pub smtp_url: Option<Secret>,
    /// The sender of email.
    pub email_from: String,
    /// SMS, push and the integrations' webhook: each a URL the message is POSTed to as JSON
    /// with an HMAC-SHA256 signature of the body (`signing_secret`). Unset: no such channel.
    /// Secrets: a provider's URL often carries its API key.
    pub sms_url: Option<Secret>,
    pub push_url: Option<Secret>,
    pub webhook_url: Option<Secret>,
    /// The key of the `Forewarn-Signature` HMAC on webhook bodies. Required when a webhook
    /// channel is set.
    pub signing_secret: Option<Secret>,
    /// The key the providers' inbound webhooks (`POST /api/v1/inbound/sms|email`: customers'
    /// replies) sign their bodies with. Unset: replies are refused (401).
    pub inbound_secret: Option<Secret>,
    /// Where customers reach this server: the base of signed links (`<public_url>/l/…`).
    pub public_url: String,
    /// The key of signed links' HMAC. Unset: a random key made once in the database
    /// (`signing_keys`), shared by every replica. Set it to move links between databases
    /// or to rotate the key (links signed with the old one stop working).
    pub link_secret: Option<Secret>,
    /// How long a link works after its message is written.
    #[serde(with = "humantime_serde")]
    pub link_ttl: Duration,
}

impl Default for OutreachConfig {
    fn default() -> Self {
        OutreachConfig {
            interval: Some(Duration::from_secs(1)),
            workers: 4,
            batch: 100,
            send_concurrency: 16,
            lease: Duration::from_secs(120),
            max_attempts: 8,
            fallback_after: 3,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            send_timeout: Duration::from_secs(20),
            log_channel: false,
            quiet_hours: true,
            smtp_url: None,
            email_from: "forewarn <service@forewarn.invalid>".to_string(),
            sms_url: None,
            push_url: None,
            webhook_url: None,
            signing_secret: None,
            inbound_secret: None,
            public_url: "http://127.0.0.1:8080".to_string(),
            link_secret: None,
            link_ttl: Duration::from_secs(14 * 86_400),
        }
    }
}

impl OutreachConfig {
    /// Rejects what would panic or misbehave later, with one sentence naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        period_rule("outreach.interval", self.interval)?;
        rule(
            (1..=64).contains(&self.workers),
            "outreach.workers",
            self.workers,
            "it must be between 1 and 64",
        )?;
        rule(
            (1..=10_000).contains(&self.batch),
            "outreach.batch",
            self.batch,
            "it must be between 1 and 10000",
        )?;
        rule(
            (1..=1_000).contains(&self.send_concurrency),
            "outreach.send_concurrency",
            self.send_concurrency,
            "it must be between 1 and 1000",
        )?;
        rule(
            self.send_timeout <= Duration::from_secs(600),
            "outreach.send_timeout",
            show(self.send_timeout),
            "it must be at most 10m",
        )?;
        // A message is sent only while its claim has `send_timeout + 5 s` left (else it is
        // handed back unsent): the lease must leave room for that and a send.
        rule(
            self.lease >= (self.send_timeout + Duration::from_secs(5)) * 2
                && self.lease <= Duration::from_secs(86_400),
            "outreach.lease",
            show(self.lease),
            "it must be at least twice outreach.send_timeout + 5s, and at most 1d",
        )?;
        rule(
            (1..=100).contains(&self.max_attempts),
            "outreach.max_attempts",
            self.max_attempts,
            "it must be between 1 and 100",
        )?;
        rule(
            self.fallback_after >= 1,
            "outreach.fallback_after",
            self.fallback_after,
            "it must be at least 1",
        )?;
        rule(
            !self.backoff_base.is_zero() && self.backoff_max >= self.backoff_base,
            "outreach.backoff_base",
            show(self.backoff_base),
            "it must be positive and at most outreach.backoff_max",
        )?;
        rule(
            self.backoff_max <= Duration::from_secs(7 * 86_400),
            "outreach.backoff_max",
            show(self.backoff_max),
            "it must be at most 7d",
        )?;
        rule(
            self.email_from.parse::<lettre::message::Mailbox>().is_ok(),
            "outreach.email_from",
            &self.email_from,
            "it must be an address such as \"forewarn <service@example.com>\"",
        )?;
        rule(
            !self.send_timeout.is_zero(),
            "outreach.send_timeout",
            show(self.send_timeout),
            "it must be positive",
        )?;
        if let Some(url) = &self.smtp_url {
            let scheme = url.expose().split_once("://").map(|(s, _)| s);
            rule(
                matches!(scheme, Some("smtp" | "smtps")),
                "outreach.smtp_url",
                crate::config::redact_url(url.expose()),
                "it must be smtp://host:port or smtps://host:port",
            )?;
            let parsed = url::Url::parse(url.expose()).ok();
            let has_credentials = parsed
                .as_ref()
                .is_some_and(|u| !u.username().is_empty() || u.password().is_some());
            let encrypted = scheme == Some("smtps")
                || parsed
                    .as_ref()
                    .is_some_and(|u| u.query_pairs().any(|(k, v)| k == "tls" && v == "required"));
            rule(
                !has_credentials || encrypted,
                "outreach.smtp_url",
                crate::config::redact_url(url.expose()),
                "credentials over plain smtp:// would cross the network readable: use smtps:// \
                 or smtp://…?tls=required",
            )?;
        }
        rule(
            self.inbound_secret
                .as_ref()
                .is_none_or(|s| s.expose().len() >= 16),
            "outreach.inbound_secret",
            "(short)",
            "it must be at least 16 characters",
        )?;
        rule(
            self.link_secret
                .as_ref()
                .is_none_or(|s| s.expose().len() >= 32),
            "outreach.link_secret",
            "(short)",
            "it must be at least 32 characters (or unset: a random key kept in the database)",
        )?;
        let public = url::Url::parse(&self.public_url);
        rule(
            public.as_ref().is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.query().is_none()
                    && u.fragment().is_none()
            }),
            "outreach.public_url",
            &self.public_url,
            "it must be an http:// or https:// URL without query or fragment, where customers \
             reach this server (links are <public_url>/l/…)",
        )?;
        rule(
            self.link_ttl >= Duration::from_secs(3600)
                && self.link_ttl <= Duration::from_secs(366 * 86_400),
            "outreach.link_ttl",
            show(self.link_ttl),
            "it must be between 1h and 366d",
        )?;
        for (key, url) in [
            ("outreach.sms_url", &self.sms_url),
            ("outreach.push_url", &self.push_url),
            ("outreach.webhook_url", &self.webhook_url),
        ] {
            if let Some(url) = url {
                let parsed = url::Url::parse(url.expose());
                rule(
                    parsed
                        .as_ref()
                        .is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
                    key,
                    crate::config::redact_url(url.expose()),
                    "it must be an http:// or https:// URL",
                )?;
                rule(
                    self.signing_secret
                        .as_ref()
                        .is_some_and(|s| s.expose().len() >= 16),
                    "outreach.signing_secret",
                    "(unset or short)",
                    "a webhook channel is set: its bodies are signed with this key, which must be \
                     at least 16 characters (FOREWARN_OUTREACH__SIGNING_SECRET)",
                )?;
            }
        }
        Ok(())
    }
}
