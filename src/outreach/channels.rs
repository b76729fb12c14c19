//! The channels a message leaves by: email over SMTP (lettre), SMS, push and the
//! integrations' webhook through HTTP providers (JSON, HMAC-signed, the idempotency key in
//! a header), and the log (the demo). Each send says whether a failure is worth retrying.

use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::config::{OutreachConfig, Secret};
use super::render::Rendered;

/// The header carrying the body's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>">`, keyed by `outreach.signing_secret`. The receiver recomputes it and
/// refuses a body that does not match or a `t` too old (a replay).
pub const SIGNATURE_HEADER: &str = "Forewarn-Signature";
/// The header carrying the message's idempotency key: a provider that sees a key twice
/// sends once.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// A channel of the outbox's `channel` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Sms,
    Push,
    Webhook,
    Log,
}

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Webhook,
        Channel::Log,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Webhook => "webhook",
            Channel::Log => "log",
        }
    }

    pub fn parse(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again (a timeout, a refused connection, a provider's 5xx or 429).
    #[error("{0}")]
    Transient(String),
    /// The provider refused this message for good (a 4xx, an address it rejects): this
    /// channel is given up on.
    #[error("{0}")]
    Permanent(String),
}

/// Where a message goes and what it says.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub idempotency_key: &'a str,
    pub channel: Channel,
    /// The address on this channel: an email address, a phone number, the customer's id.
    pub to: &'a str,
    pub customer: &'a str,
    pub message_type: &'a str,
    pub ticket_id: Option<i64>,
    pub incident_id: Option<i64>,
    pub reference: &'a str,
    pub urgent: bool,
    pub rendered: &'a Rendered,
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelSetupError {
    #[error("outreach.smtp_url: {0}")]
    Smtp(String),
    #[error("outreach.email_from: {0}")]
    From(String),
    #[error("the HTTP client: {0}")]
    Http(String),
}

/// The channels configured for this process.
#[derive(Clone)]
pub struct Channels {
    smtp: Option<Arc<AsyncSmtpTransport<Tokio1Executor>>>,
    from: Mailbox,
    http: reqwest::Client,
    sms_url: Option<Secret>,
    push_url: Option<Secret>,
    webhook_url: Option<Secret>,
    secret: Option<Secret>,
    log: bool,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let available: Vec<_> = Channel::ALL
            .into_iter()
            .filter(|c| self.has(*c))
            .map(Channel::as_str)
            .collect();
        f.debug_struct("Channels")
            .field("available", &available)
            .finish()
    }
}

impl Channels {
    pub fn new(config: &OutreachConfig) -> Result<Channels, ChannelSetupError> {
        let smtp = match &config.smtp_url {
            Some(url) => Some(Arc::new(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|e| ChannelSetupError::Smtp(e.to_string()))?
                    .timeout(Some(config.send_timeout))
                    .build(),
            )),
            None => None,
        };
        let from = config
            .email_from
            .parse()
            .map_err(|e: lettre::address::AddressError| ChannelSetupError::From(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(http_tls())
            .timeout(config.send_timeout)
            .connect_timeout(config.send_timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            // A redirect would turn the POST into a GET without the message: never follow.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ChannelSetupError::Http(e.to_string()))?;
        Ok(Channels {
            smtp,
            from,
            http,
            sms_url: config.sms_url.clone(),
            push_url: config.push_url.clone(),
            webhook_url: config.webhook_url.clone(),
            secret: config.signing_secret.clone(),
            log: config.log_channel,
        })
    }

    /// Whether this process can send on `channel`.
    pub fn has(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.smtp.is_some(),
            Channel::Sms => self.sms_url.is_some(),
            Channel::Push => self.push_url.is_some(),
            Channel::Webhook => self.webhook_url.is_some(),
            Channel::Log => self.log,
        }
    }

    /// Sends one message; `Ok` holds the provider's answer.
    pub async fn send(&self, message: &Outgoing<'_>) -> Result<String, SendError> {
        match message.channel {
            Channel::Email => self.email(message).await,
            Channel::Sms => self.post(self.sms_url.as_ref(), message).await,
            Channel::Push => self.post(self.push_url.as_ref(), message).await,
            Channel::Webhook => self.post(self.webhook_url.as_ref(), message).await,
            Channel::Log => {
                tracing::info!(
                    target: "forewarn::outreach::log",
                    key = message.idempotency_key,
                    to = message.customer,
                    language = message.rendered.language,
                    subject = %message.rendered.subject,
                    "{}",
                    message.rendered.text
                );
                Ok("logged".to_string())
            }
        }
    }

    async fn email(&self, message: &Outgoing<'_>) -> Result<String, SendError> {
        let smtp = self
            .smtp
            .as_ref()
            .ok_or_else(|| SendError::Permanent("no SMTP server configured".to_string()))?;
        let to: Mailbox = message
            .to
            .parse()
            .map_err(|e| SendError::Permanent(format!("email address {:?}: {e}", message.to)))?;
        // The same key gives the same Message-ID: a retry after a crash is the same email,
        // which receiving systems show once.
        let domain = self.from.email.domain().to_string();
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&message.rendered.subject)
            .message_id(Some(format!(
                "<{}@{domain}>",
                hex(&sha256(message.idempotency_key.as_bytes()))
            )))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Content-Language"),
                message.rendered.language.to_string(),
            ))
            .multipart(MultiPart::alternative_plain_html(
                message.rendered.text.clone(),
                message.rendered.html.clone(),
            ))
            .map_err(|e| SendError::Permanent(format!("email: {e}")))?;
        match smtp.send(email).await {
            Ok(response) => Ok(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            // Refused for this message: a mailbox or address the server rejects. Other
            // permanent codes (530/535: our authentication) are the channel's trouble.
            Err(error)
                if error.is_permanent()
                    && error.status().is_some_and(|code| {
                        matches!(
                            code.to_string().as_str(),
                            "550" | "551" | "553" | "501" | "552"
                        )
                    }) =>
            {
                Err(SendError::Permanent(error.to_string()))
            }
            Err(error) => Err(SendError::Transient(error.to_string())),
        }
    }

    async fn post(
        &self,
        url: Option<&Secret>,
        message: &Outgoing<'_>,
    ) -> Result<String, SendError> {
        let url = url.map(Secret::expose).ok_or_else(|| {
            SendError::Permanent(format!(
                "no {} provider configured",
                message.channel.as_str()
            ))
        })?;
        let body = serde_json::to_vec(&serde_json::json!({
            "id": message.idempotency_key,
            "channel": message.channel.as_str(),
            "to": message.to,
            "customer": message.customer,
            "message_type": message.message_type,
            "language": message.rendered.language,
            "urgent": message.urgent,
            "subject": message.rendered.subject,
            "text": message.rendered.text,
            "ticket_id": message.ticket_id,
            "incident_id": message.incident_id,
            "reference": message.reference,
        }))
        .map_err(|e| SendError::Permanent(format!("encoding the body: {e}")))?;
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_HEADER, message.idempotency_key);
        if let Some(secret) = &self.secret {
            request = request.header(
                SIGNATURE_HEADER,
                signature(secret.expose(), unix_seconds(), &body),
            );
        }
        let response = request.body(body).send().await.map_err(|e| {
            // No answer (refused, reset, timed out): the provider may have it or not; the
            // idempotency key makes the retry safe. The URL (it may hold a token) is left
            // out of what is logged and stored.
            SendError::Transient(format!(
                "{}: {}",
                message.channel.as_str(),
                error_chain(&e.without_url())
            ))
        })?;
        let status = response.status();
        let text = read_prefix(response, 4096).await;
        let answer = format!("{} {}", status.as_u16(), truncate(&text, 500));
        if status.is_success() {
            Ok(answer)
        } else if matches!(status.as_u16(), 400 | 413 | 422) {
            // This message is refused (its content, its recipient): another channel may
            // carry it. Anything else — a bad key (401/403), a wrong URL or a deploy
            // (404/410), the same key still in flight (409), a redirect, 5xx — is the
            // channel's trouble, not the message's: retried.
            Err(SendError::Permanent(answer))
        } else {
            Err(SendError::Transient(answer))
        }
    }
}

/// The `Forewarn-Signature` value of `body` sent at `unix_seconds`.
pub fn signature(secret: &str, unix_seconds: u64, body: &[u8]) -> String {
    format!(
        "t={unix_seconds},v1={}",
        signature_hex(secret, unix_seconds, body)
    )
}

/// The `v1` part of `Forewarn-Signature`: hex HMAC-SHA256 of `"<t>.<body>"`.
pub fn signature_hex(secret: &str, unix_seconds: u64, body: &[u8]) -> String {
    hex(&hmac_sha256(
        secret.as_bytes(),
        &[unix_seconds.to_string().as_bytes(), b".", body],
    ))
}

/// Seconds since the Unix epoch now (the `t` of a signature).
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// HMAC-SHA256 of the concatenated `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Whether two signatures are equal, in time that does not depend on where they differ
/// (an attacker timing answers learns nothing about the right one).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The first `max` bytes of a response's body (a provider's answer is kept for the record,
/// not read whole whatever its size).
async fn read_prefix(mut response: reqwest::Response, max: usize) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                bytes.extend_from_slice(&chunk[..chunk.len().min(max - bytes.len())])
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// TLS for https:// providers: rustls with ring (the binary's one provider) and the
/// system's CA certificates. With none installed, an https:// send fails with a
/// certificate error (retried, then the next channel), never a panic.
fn http_tls() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"));
    builder.with_root_certificates(roots).with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_hmac_of_time_and_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            hex(&hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let s = signature("k", 1_700_000_000, b"{}");
        assert!(s.starts_with("t=1700000000,v1="));
        assert_eq!(s, signature("k", 1_700_000_000, b"{}"));
        assert_ne!(s, signature("k", 1_700_000_000, b"{ }"));
    }

    #[test]
    fn channel_names_round_trip() {
        for channel in Channel::ALL {
            assert_eq!(Channel::parse(channel.as_str()), Some(channel));
        }
        assert_eq!(Channel::parse("fax"), None);
    }
}
