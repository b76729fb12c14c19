//! The `mqtt` and `ingest` sections: the broker session and what ingest holds, accepts and
//! writes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::rules::{rule, show, show_optional};
use crate::config::{ConfigError, default_client_id, optional_duration, proc_host_name};

/// The MQTT version ingest speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum MqttProtocol {
    /// MQTT 5: session expiry, Receive Maximum and Maximum Packet Size declared by ingest.
    #[serde(rename = "5")]
    V5,
    /// MQTT 3.1.1: the session lives until the broker expires it
    /// (Mosquitto `persistent_client_expiration`), and the broker's window bounds what it
    /// sends unacknowledged.
    #[serde(rename = "3.1.1")]
    V311,
}

impl MqttProtocol {
    /// The version's name, as configured (`mqtt.protocol`) and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            MqttProtocol::V5 => "5",
            MqttProtocol::V311 => "3.1.1",
        }
    }
}

impl std::str::FromStr for MqttProtocol {
    type Err = String;

    fn from_str(text: &str) -> Result<MqttProtocol, String> {
        [MqttProtocol::V5, MqttProtocol::V311]
            .into_iter()
            .find(|protocol| protocol.as_str() == text)
            .ok_or_else(|| format!("`{text}`: the MQTT versions are 5 and 3.1.1"))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port` (user and password in the URL); env
    /// `MQTT_URL`. Unset: an embedded in-memory broker is started in-process.
    pub url: Option<String>,
    /// Client id of the ingest session. Stable across restarts so that the broker keeps the
    /// persistent session and redelivers what was not acknowledged. Replicas need distinct ids:
    /// the default, `forewarn-ingest-<host name>` ([`default_client_id`]), gives each machine
    /// or pod its own.
    pub client_id: String,
    /// Topic prefix: devices publish on `{prefix}/{device_id}/{telemetry|events|status}`.
    pub topic_prefix: String,
    /// MQTT keep-alive interval.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Protocol of ingest's sessions with an external broker: `"5"` (MQTT v5, the default)
    /// or `"3.1.1"`. The embedded broker is always spoken to in 3.1.1.
    pub protocol: MqttProtocol,
    /// MQTT v5: how long the broker keeps an ingest session (and queues its share of a
    /// shared subscription) after its connection ends. A restart within it resumes where
    /// the session stopped; a replica gone for longer stops being sent messages.
    #[serde(with = "humantime_serde")]
    pub session_expiry: Duration,
    /// Listen address of the embedded broker (used only when `url` is unset); port 0 picks one.
    /// Loopback only: the embedded broker serves this machine, with generated credentials.
    pub embedded_listen: SocketAddr,
    /// `mqtts://`: PEM file of the CA certificate(s) that issued the broker's certificate.
    /// Unset: the system's CA certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// `mqtts://`: PEM client certificate (with its chain) for a broker that requires one
    /// (Mosquitto's `require_certificate`); goes with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// `mqtts://`: PEM private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: Option<PathBuf>,
    /// User name for the broker; overrides the one in `url`.
    pub username: Option<String>,
    /// File holding the broker password (a mounted secret; a trailing newline is ignored);
    /// env `MQTT_PASSWORD_FILE`. Overrides the password in `url`.
    pub password_file: Option<PathBuf>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            client_id: default_client_id(proc_host_name().as_deref()),
            topic_prefix: "devices".into(),
            keep_alive: Duration::from_secs(30),
            protocol: MqttProtocol::V5,
            session_expiry: Duration::from_secs(3600),
            embedded_listen: "127.0.0.1:1884".parse().expect("literal address"),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            username: None,
            password_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Shared-subscription group: subscribe as `$share/{group}/…` so replicas split the stream.
    pub shared_group: Option<String>,
    /// MQTT sessions this process opens (client ids `{client_id}-{n}` when more than one),
    /// each with its own poller, writer, database connections and broker in-flight window.
    /// Several sessions share one subscription group: `shared_group`, or `{client_id}` when
    /// unset (then this process alone splits the stream between its sessions). `0` (the
    /// default) means `AUTO_SESSIONS` with an external broker and 1 with the embedded one,
    /// whose shared subscriptions are broken.
    pub sessions: usize,
    /// Flush a batch when it holds this many readings.
    pub batch_max_readings: usize,
    /// Flush a batch when its oldest message has waited this long. A batch also stops
    /// waiting as soon as no message has come for 2 ms (the broker's window is spent).
    #[serde(with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Largest payload accepted; larger ones are dead-lettered.
    pub max_payload_bytes: usize,
    /// Largest MQTT packet the client reads at all (must exceed `max_payload_bytes`, so that a
    /// payload between the two is dead-lettered). A larger packet breaks the connection and
    /// the broker resends it first on every reconnect, so the broker's own limit must not
    /// exceed this one (Mosquitto `max_packet_size`; the shipped configurations agree).
    pub max_packet_bytes: usize,
    /// Largest absolute metric value accepted; larger ones are dead-lettered
    /// (`value_out_of_range`). Keeps sums of squares in the rollups finite.
    pub max_abs_value: f64,
    /// How far in the future (by the wall clock) a timestamp may be.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Oldest timestamp accepted, as an age; `"off"` lifts the limit (imports, replays).
    #[serde(with = "optional_duration")]
    pub max_age: Option<Duration>,
    /// Read Sparkplug B (`spBv1.0/…`) as a host application: births, data and deaths of
    /// edge nodes and their devices. One session of the process subscribes (never shared:
    /// sequence numbers count an edge node's every message); run it on one replica, or on
    /// each (writes are idempotent, rebirth requests repeat).
    pub sparkplug: bool,
    /// Register unknown devices on first message (`true`) or dead-letter them (`false`).
    pub auto_register: bool,
    /// At most this many devices are registered per minute (per process); messages of
    /// further new devices are dead-lettered (`registration_limited`).
    pub max_new_devices_per_minute: u32,
    /// Add unknown metric names to the catalogue (`true`) or dead-letter them (`false`).
    pub open_metric_catalogue: bool,
    /// At most this many metric names are added per minute (per process; the catalogue
    /// holds 32,767); messages with further new names are dead-lettered
    /// (`registration_limited`).
    pub max_new_metrics_per_minute: u32,
    /// Per process: at most this many messages are held (received, not yet committed and
    /// acknowledged), shared equally between the sessions. A session at its share stops
    /// reading from the broker, which keeps the rest of its backlog, and goes on
    /// acknowledging.
    pub max_pending_messages: usize,
    /// Per process: the same bound in bytes (payload, topic and parsed readings plus a
    /// fixed overhead per message), shared equally between the sessions.
    pub max_pending_bytes: usize,
    /// Per session: batches committing at once, each on its own database connection, while
    /// the next one is prepared. Acknowledgements stay in arrival order.
    pub writes_in_flight: usize,
    /// Per session: device ids and metric ids cached (bounded; the least used fall out).
    pub id_cache_capacity: usize,
    /// `devices.last_seen_at` is written in each batch's transaction when the batch moves
    /// it forward by at least this much (event time), so that a busy device's row is not
    /// rewritten by every batch; it may lag the newest committed reading by less than this.
    #[serde(with = "humantime_serde")]
    pub last_seen_resolution: Duration,
    /// A message without `ts` is stamped with its receive time, which a redelivery does
    /// not share. A redelivered one (MQTT DUP flag, set by Mosquitto and EMQX) is stored
    /// only where the same device has no receive-stamped reading (or event) with the same
    /// metric and value (code and message) within this window before it.
    #[serde(with = "humantime_serde")]
    pub redelivery_window: Duration,
    /// After a shutdown signal, how long ingest may finish the writes it has started;
    /// what is not committed by then is left unacknowledged for redelivery.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// Sessions opened with an external broker when `ingest.sessions` is 0: measured by
/// `forewarn bench ingest`, two sessions of two writes in flight drain a backlog about as fast
/// as four, where one session reaches only about 60 %.
pub const AUTO_SESSIONS: usize = 2;

impl IngestConfig {
    /// `sessions`, with 0 resolved for an external broker (the embedded broker's caller
    /// sets 1 explicitly).
    pub fn session_count(&self) -> usize {
        match self.sessions {
            0 => AUTO_SESSIONS,
            n => n,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            shared_group: None,
            sessions: 0,
            batch_max_readings: 20_000,
            batch_max_age: Duration::from_millis(100),
            max_payload_bytes: 64 * 1024,
            max_packet_bytes: 1024 * 1024,
            max_abs_value: 1e12,
            max_future_skew: Duration::from_secs(300),
            max_age: Some(Duration::from_secs(400 * 86_400)),
            sparkplug: false,
            auto_register: true,
            max_new_devices_per_minute: 10_000,
            open_metric_catalogue: true,
            max_new_metrics_per_minute: 100,
            max_pending_messages: 20_000,
            max_pending_bytes: 64 * 1024 * 1024,
            writes_in_flight: 2,
            id_cache_capacity: 200_000,
            last_seen_resolution: Duration::from_secs(1),
            redelivery_window: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// MQTT's remaining-length field cannot describe a larger packet.
const MAX_MQTT_PACKET_BYTES: usize = 268_435_455;
pub(crate) const MAX_SESSIONS: usize = 256;
/// Far above any broker's in-flight window, far below what a bounded channel can hold.
const MAX_PENDING_MESSAGES: usize = 1 << 24;

/// The `mqtt` and `ingest` sections together (the session ids depend on both): rejects
/// what would panic or misbehave later, with one sentence naming the key.
pub fn validate(mqtt: &MqttConfig, ingest: &IngestConfig) -> Result<(), ConfigError> {
    rule(
        crate::contract::is_valid_device_external_id(&mqtt.client_id),
        "mqtt.client_id",
        format!("{:?}", mqtt.client_id),
        "it must be 1-64 characters of [A-Za-z0-9_.:-]",
    )?;
    rule(
        ingest.sessions <= MAX_SESSIONS,
        "ingest.sessions",
        ingest.sessions,
        &format!("it must be between 0 (automatic) and {MAX_SESSIONS}"),
    )?;
    if ingest.session_count() > 1 {
        let last_session_id = format!("{}-{}", mqtt.client_id, ingest.session_count() - 1);
        rule(
            crate::contract::is_valid_device_external_id(&last_session_id),
            "mqtt.client_id",
            format!("{:?}", mqtt.client_id),
            &format!(
                "with {} ingest sessions the session ids ({last_session_id:?}) must stay within 64 characters",
                ingest.session_count()
            ),
        )?;
    }
    rule(
        is_valid_topic_prefix(&mqtt.topic_prefix),
        "mqtt.topic_prefix",
        format!("{:?}", mqtt.topic_prefix),
        "it must be one or more topic levels joined by '/', without wildcards (+ #), empty levels or a leading $",
    )?;
    rule(
        mqtt.keep_alive >= Duration::from_secs(1)
            && mqtt.keep_alive <= Duration::from_secs(u64::from(u16::MAX)),
        "mqtt.keep_alive",
        show(mqtt.keep_alive),
        "it must be between 1s and 65535s (MQTT counts whole seconds up to 65535, and without keep-alive a dead connection goes unnoticed)",
    )?;
    rule(
        mqtt.session_expiry >= Duration::from_secs(1)
            && mqtt.session_expiry < Duration::from_secs(u64::from(u32::MAX)),
        "mqtt.session_expiry",
        show(mqtt.session_expiry),
        "it must be at least 1s (a session that ends with its connection loses what was not acknowledged) and below 136 years",
    )?;
    rule(
        mqtt.tls_cert_file.is_some() == mqtt.tls_key_file.is_some(),
        "mqtt.tls_cert_file",
        format!("{:?}", mqtt.tls_cert_file),
        "mqtt.tls_cert_file and mqtt.tls_key_file go together: set both or neither",
    )?;
    let broker_settings = [
        ("mqtt.username", mqtt.username.is_some()),
        ("mqtt.password_file", mqtt.password_file.is_some()),
        ("mqtt.tls_ca_file", mqtt.tls_ca_file.is_some()),
        ("mqtt.tls_cert_file", mqtt.tls_cert_file.is_some()),
    ];
    if mqtt.url.is_none()
        && let Some((key, _)) = broker_settings.iter().find(|(_, set)| *set)
    {
        rule(
            false,
            key,
            "set",
            "it is for an external broker, but MQTT_URL (mqtt.url) is unset: the embedded broker makes its own credentials; set MQTT_URL or unset it",
        )?;
    }
    if let Some(url) = &mqtt.url {
        let url_has_user = url::Url::parse(url).is_ok_and(|u| !u.username().is_empty());
        rule(
            mqtt.password_file.is_none() || mqtt.username.is_some() || url_has_user,
            "mqtt.password_file",
            format!("{:?}", mqtt.password_file),
            "a password needs a user name: set mqtt.username or put the user in MQTT_URL (mqtt://user@host)",
        )?;
        let tls_set = mqtt.tls_ca_file.is_some() || mqtt.tls_cert_file.is_some();
        rule(
            !tls_set || url.starts_with("mqtts://") || url.starts_with("ssl://"),
            "mqtt.tls_ca_file",
            format!("{:?}", mqtt.tls_ca_file),
            "TLS files are set but MQTT_URL is not mqtts://: use mqtts:// (port 8883 by default) or unset them",
        )?;
    }
    rule(
        mqtt.embedded_listen.ip().is_loopback(),
        "mqtt.embedded_listen",
        mqtt.embedded_listen,
        "the embedded broker serves this machine only: it must be a loopback address (127.0.0.0/8 or ::1); for devices on other machines run a real broker and set MQTT_URL",
    )?;

    if let Some(group) = &ingest.shared_group {
        rule(
            !group.is_empty() && !group.contains(['/', '+', '#']),
            "ingest.shared_group",
            format!("{group:?}"),
            "a shared-subscription group must be non-empty and contain none of / + #",
        )?;
    }
    rule(
        ingest.batch_max_readings >= 1,
        "ingest.batch_max_readings",
        ingest.batch_max_readings,
        "it must be at least 1",
    )?;
    rule(
        ingest.max_payload_bytes >= 1,
        "ingest.max_payload_bytes",
        ingest.max_payload_bytes,
        "it must be at least 1",
    )?;
    rule(
        ingest.max_packet_bytes > ingest.max_payload_bytes
            && ingest.max_packet_bytes <= MAX_MQTT_PACKET_BYTES,
        "ingest.max_packet_bytes",
        ingest.max_packet_bytes,
        &format!(
            "it must exceed ingest.max_payload_bytes ({}) and be at most {MAX_MQTT_PACKET_BYTES} (the largest MQTT packet)",
            ingest.max_payload_bytes
        ),
    )?;
    rule(
        (1..=MAX_PENDING_MESSAGES).contains(&ingest.max_pending_messages),
        "ingest.max_pending_messages",
        ingest.max_pending_messages,
        &format!("it must be between 1 and {MAX_PENDING_MESSAGES}"),
    )?;
    for (key, value) in [
        ("ingest.max_pending_bytes", ingest.max_pending_bytes),
        ("ingest.writes_in_flight", ingest.writes_in_flight),
        ("ingest.id_cache_capacity", ingest.id_cache_capacity),
    ] {
        rule(value >= 1, key, value, "it must be at least 1")?;
    }
    rule(
        ingest.max_abs_value.is_finite() && ingest.max_abs_value > 0.0,
        "ingest.max_abs_value",
        ingest.max_abs_value,
        "it must be a positive finite number",
    )?;
    rule(
        !ingest.shutdown_grace.is_zero(),
        "ingest.shutdown_grace",
        show(ingest.shutdown_grace),
        "it must be positive (0 leaves no time to finish a commit)",
    )?;
    rule(
        ingest.max_age.is_none_or(|age| !age.is_zero()),
        "ingest.max_age",
        show_optional(ingest.max_age),
        "it must be positive (0 would reject every reading) or \"off\"",
    )?;

    Ok(())
}

/// `{prefix}/{device_id}/{kind}` must be a topic name and a filter: levels that are not empty,
/// no wildcards, and no leading `$` (brokers reserve `$SYS`, `$share`).
fn is_valid_topic_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && !prefix.starts_with('$')
        && !prefix.contains(['+', '#', '\0'])
        && prefix.split('/').all(|level| !level.is_empty())
}
