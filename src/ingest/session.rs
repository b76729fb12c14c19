//! One MQTT session: the poller, which alone owns the connection, and its writer.
//!
//! What a session holds in memory is bounded by its own limits, never by a promise of the
//! broker: the poller counts every message it hands to the writer (messages and bytes)
//! until the writer settles it, and stops *reading* the socket while either count is at
//! its share of the process's limits (`ingest.max_pending_messages`,
//! `ingest.max_pending_bytes`, divided equally between the sessions). TCP backpressure
//! then keeps the broker's backlog at the broker. While reading is paused the poller still
//! writes acknowledgements and keep-alive pings, so backpressure never stops an ack, and
//! neither task ever waits on a channel the other one drains (both channels are unbounded;
//! the budget is what bounds them).
//!
//! The connection is ingest's own ([`super::link`], MQTT v5 by default): reading and
//! writing are separate calls, so a paused session still acknowledges. Acks are tagged
//! with the connection they belong to: after a reconnect the broker redelivers what was
//! not acknowledged, possibly under other packet ids, so an ack for an older connection is
//! dropped instead of acknowledging an uncommitted message that happens to reuse its id.

use std::time::{Duration, Instant};

use std::sync::Arc;

use rumqttc::{MqttOptions, Publish, QoS, Transport};
use tokio::sync::{mpsc, oneshot};

pub(super) use super::link::Endpoint;
use super::link::{Accepted, Incoming, Link, LinkError, LinkOptions};
use super::sparkplug::SparkplugHost;
use super::writer::{Parsed, Pending, Writer};
use super::{IngestDeps, IngestSettings, SharedLimits};
use crate::config::{IngestConfig, MqttConfig};
use crate::contract::ValidationLimits;
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error("MQTT_URL `{0}` is not a URL")]
    Parse(String),
    #[error("MQTT_URL scheme must be mqtt:// or mqtts://, got `{0}`")]
    Scheme(String),
    #[error("MQTT_URL `{0}` has no host")]
    NoHost(String),
    #[error("MQTT_URL `{0}`: the user name or password is not valid percent-encoded UTF-8")]
    Credentials(String),
    #[error("cannot read mqtt.password_file {path}: {source}")]
    PasswordFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] super::tls::TlsSetupError),
}

/// Bytes a held message is charged beyond its topic, payload and parsed readings: the
/// batch bookkeeping and the allocator's slack.
const MESSAGE_OVERHEAD_BYTES: usize = 512;
/// Packets already buffered that one wake of the poller handles before it looks at its
/// other work again (acks, pings, shutdown).
const PACKETS_PER_WAKE: usize = 64;
/// Reconnection backoff: the first wait, the longest, and how long a connection must
/// have lived for the next failure to start over from the first.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const HEALTHY_CONNECTION: Duration = Duration::from_secs(10);
/// How long a write to the broker may take before the connection is taken as dead.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);

/// A message as received, with its receipt times and the connection it came on.
#[derive(Debug)]
pub(super) struct Received {
    pub publish: Publish,
    /// Wall clock, epoch µs: the time used when a payload has no `ts`, and for dead letters.
    pub received_at: i64,
    pub received_instant: Instant,
    /// The connection it arrived on (counts up from 1 with every CONNACK).
    pub connection: u64,
    /// What it is charged against `ingest.max_pending_bytes`.
    pub cost: usize,
}

impl Received {
    /// The writer is done with this message (its rows or dead letter are committed).
    pub fn settled(&self) -> Settled {
        Settled {
            connection: self.connection,
            pkid: if self.publish.qos == QoS::AtMostOnce {
                0
            } else {
                self.publish.pkid
            },
            cost: self.cost,
        }
    }
}

/// What the writer sends back for each message, in arrival order, after its commit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settled {
    connection: u64,
    /// 0 for QoS 0 messages, which take no ack.
    pkid: u16,
    cost: usize,
}

impl Endpoint {
    /// Parses `MQTT_URL` with the `mqtt` section: `mqtts://` uses the CA and client
    /// certificate files of `mqtt` ([`super::tls`]); credentials come from `mqtt.username`
    /// and `mqtt.password_file`, else from the URL (percent-decoded).
    pub(super) fn parse(url: &str, mqtt: &MqttConfig) -> Result<Endpoint, MqttSetupError> {
        let redacted = || crate::config::redact_url(url);
        let parsed = url::Url::parse(url).map_err(|_| MqttSetupError::Parse(redacted()))?;
        let (tls, default_port) = match parsed.scheme() {
            "mqtt" | "tcp" => (None, 1883),
            "mqtts" | "ssl" => (Some(super::tls::client_config(mqtt)?), 8883),
            other => return Err(MqttSetupError::Scheme(other.to_string())),
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| MqttSetupError::NoHost(redacted()))?
            // An IPv6 literal is bracketed in a URL, not in a socket address.
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
                .map_err(|_| MqttSetupError::Credentials(redacted()))
        };
        let username = match &mqtt.username {
            Some(username) => username.clone(),
            None => decode(parsed.username())?,
        };
        let password = match &mqtt.password_file {
            Some(path) => {
                crate::config::read_secret(path).map_err(|source| MqttSetupError::PasswordFile {
                    path: path.clone(),
                    source,
                })?
            }
            None => decode(parsed.password().unwrap_or_default())?,
        };
        Ok(Endpoint {
            port: parsed.port().unwrap_or(default_port),
            host,
            tls,
            username,
            password,
        })
    }
}

/// rumqttc client options for a *publisher* of this broker (load generator, tests): the
/// same URL, TLS and credential rules as ingest's own connection, on a session that
/// survives reconnects (`clean_session = false`, stable client id) with manual acks.
pub fn mqtt_options(
    url: &str,
    client_id: &str,
    mqtt: &MqttConfig,
    ingest: &IngestConfig,
) -> Result<MqttOptions, MqttSetupError> {
    let endpoint = Endpoint::parse(url, mqtt)?;
    let mut options = MqttOptions::new(client_id, endpoint.host, endpoint.port);
    if let Some(config) = endpoint.tls {
        options.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(config),
        ));
    }
    options
        // rumqttc panics below one second; configuration validation refuses such values,
        // and this keeps a library caller from reaching the panic.
        .set_keep_alive(mqtt.keep_alive.max(Duration::from_secs(1)))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(ingest.max_packet_bytes, ingest.max_packet_bytes);
    if !endpoint.username.is_empty() || !endpoint.password.is_empty() {
        options.set_credentials(endpoint.username, endpoint.password);
    }
    Ok(options)
}

/// What each ingest session connects with.
pub(super) fn link_options(
    settings: &IngestSettings,
    endpoint: &Arc<Endpoint>,
    client_id: String,
) -> LinkOptions {
    let sessions = settings.ingest.session_count().max(1);
    let max_messages = (settings.ingest.max_pending_messages / sessions).max(1);
    LinkOptions {
        endpoint: endpoint.clone(),
        client_id,
        protocol: settings.mqtt.protocol,
        keep_alive: settings.mqtt.keep_alive.max(Duration::from_secs(1)),
        session_expiry: settings.mqtt.session_expiry,
        // The broker may send no more unacknowledged messages than this session may hold.
        receive_maximum: u16::try_from(max_messages).unwrap_or(u16::MAX),
        max_packet_bytes: settings.ingest.max_packet_bytes,
    }
}

pub(super) async fn run_session(
    options: LinkOptions,
    session_idx: usize,
    settings: IngestSettings,
    deps: IngestDeps,
    shared: Arc<SharedLimits>,
    shutdown: Shutdown,
) {
    let sessions = settings.ingest.session_count().max(1);
    let (message_tx, message_rx) = mpsc::unbounded_channel();
    let (settled_tx, settled_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let now = tokio::time::Instant::now();
    let poller = Poller {
        client_id: options.client_id.clone(),
        keep_alive: options.keep_alive,
        options,
        link: None,
        subscriptions: settings.session_subscriptions(session_idx),
        sparkplug: settings
            .reads_sparkplug(session_idx)
            .then(|| SparkplugHost::new(settings.limits())),
        message_tx,
        topic_prefix: settings.mqtt.topic_prefix.clone(),
        limits: settings.limits(),
        settled_rx,
        deps: deps.clone(),
        // The limits are the process's: each of its sessions holds an equal share.
        max_messages: (settings.ingest.max_pending_messages / sessions).max(1),
        max_bytes: (settings.ingest.max_pending_bytes / sessions).max(1),
        held_messages: 0,
        held_bytes: 0,
        connection: 0,
        connected: false,
        ping_timer: Box::pin(tokio::time::sleep_until(now)),
        next_attempt: now,
        backoff: FIRST_BACKOFF,
        connected_at: None,
        last_read: now,
        mqtt: settings.mqtt.clone(),
    };
    let poller = tokio::spawn(poller.run(stop_rx));
    let writer = Writer::new(&settings, deps.clone(), shared, settled_tx, &shutdown);
    if !writer.run(message_rx, shutdown).await {
        // Die like a killed process: drop the connection without acks or DISCONNECT, so the
        // broker keeps the session and resends everything unacknowledged.
        poller.abort();
        let _ = poller.await;
        return;
    }
    // Everything written is settled; the poller writes the last acks, then DISCONNECT.
    let _ = stop_tx.send(());
    if let Err(error) = poller.await
        && !error.is_cancelled()
    {
        tracing::error!(%error, "mqtt poller task failed");
    }
}

struct Poller {
    options: LinkOptions,
    /// The connection; `None` between a loss and the next CONNACK.
    link: Option<Link>,
    client_id: String,
    subscriptions: Vec<String>,
    /// The Sparkplug B host state, in the one session that reads the namespace.
    sparkplug: Option<SparkplugHost>,
    message_tx: mpsc::UnboundedSender<Pending>,
    topic_prefix: String,
    limits: ValidationLimits,
    settled_rx: mpsc::UnboundedReceiver<Settled>,
    deps: IngestDeps,
    max_messages: usize,
    max_bytes: usize,
    /// Messages handed to the writer and not yet settled, and what they cost.
    held_messages: usize,
    held_bytes: usize,
    /// The current connection's number (0 before the first CONNACK).
    connection: u64,
    connected: bool,
    /// The keep-alive in force (the broker's, when it set one).
    keep_alive: Duration,
    /// When the next keep-alive ping is due; one timer, reset when the ping moves (not one
    /// per wake).
    ping_timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// When the next connection attempt may start, and the backoff after it.
    next_attempt: tokio::time::Instant,
    backoff: Duration,
    /// When the current connection was accepted.
    connected_at: Option<tokio::time::Instant>,
    /// When a packet last arrived (or reading last resumed after a pause).
    last_read: tokio::time::Instant,
    /// For the sentence that explains a TLS failure.
    mqtt: MqttConfig,
}

/// What woke the poller.
enum Wake {
    Stop,
    Settled(Option<Settled>),
    Incoming(Result<Incoming, LinkError>),
    Ping,
}

impl Poller {
    async fn run(mut self, mut stop_rx: oneshot::Receiver<()>) {
        let mut paused_since: Option<Instant> = None;
        loop {
            if self.link.is_none() {
                // Every reconnect waits its backoff: a connection that fails soon after
                // CONNACK (a session taken over, a packet the broker resends first every
                // time) must not turn into a tight loop.
                tokio::select! {
                    biased;
                    _ = &mut stop_rx => return self.stop().await,
                    _ = tokio::time::sleep_until(self.next_attempt) => {}
                }
                let connected = tokio::select! {
                    biased;
                    _ = &mut stop_rx => return self.stop().await,
                    connected = Link::connect(&self.options) => connected,
                };
                match connected {
                    Ok((link, accepted)) => self.on_connected(link, accepted),
                    Err(error) => {
                        self.on_connection_error(&error);
                        self.back_off();
                        continue;
                    }
                }
            }
            // Settle everything the writer has finished, with one flush for all its acks.
            while let Ok(settled) = self.settled_rx.try_recv() {
                self.settle(settled);
            }
            self.flush().await;
            let Some(link) = self.link.as_mut() else {
                continue;
            };

            let over_budget =
                self.held_messages >= self.max_messages || self.held_bytes >= self.max_bytes;
            if over_budget {
                if paused_since.is_none() {
                    paused_since = Some(Instant::now());
                    self.deps.metrics.ingest.read_pauses.inc();
                    tracing::debug!(
                        held_messages = self.held_messages,
                        held_bytes = self.held_bytes,
                        "at the pending limit: reading paused"
                    );
                }
            } else if let Some(since) = paused_since.take() {
                // Nothing was read while paused, the broker's answers to our pings included.
                self.last_read = tokio::time::Instant::now();
                self.deps
                    .metrics
                    .ingest
                    .read_paused_seconds
                    .inc_by(since.elapsed().as_secs_f64());
            }
            // Not reading while over budget: the backlog stays at the broker (TCP
            // backpressure), while acks and pings still go out.
            let wake = tokio::select! {
                biased;
                _ = &mut stop_rx => Wake::Stop,
                settled = self.settled_rx.recv() => Wake::Settled(settled),
                _ = self.ping_timer.as_mut() => Wake::Ping,
                incoming = link.read(), if !over_budget => Wake::Incoming(incoming),
            };
            match wake {
                Wake::Stop => return self.stop().await,
                Wake::Settled(Some(settled)) => self.settle(settled),
                Wake::Settled(None) => return, // the writer is gone
                Wake::Ping => self.ping(paused_since.is_some()),
                Wake::Incoming(Ok(incoming)) => {
                    self.last_read = tokio::time::Instant::now();
                    if self.handle(incoming) || self.handle_buffered() {
                        return;
                    }
                }
                Wake::Incoming(Err(error)) => self.failed(&error),
            }
        }
    }

    fn on_connected(&mut self, mut link: Link, accepted: Accepted) {
        self.connection += 1;
        self.keep_alive = accepted.keep_alive.max(Duration::from_secs(1));
        let now = tokio::time::Instant::now();
        self.connected_at = Some(now);
        self.schedule_ping(now + self.keep_alive / 2);
        self.last_read = now;
        tracing::info!(
            client_id = self.client_id,
            connection = self.connection,
            protocol = ?self.options.protocol,
            session_present = accepted.session_present,
            "mqtt connected"
        );
        // Subscribing again is harmless on a resumed session and required on a new one.
        // A resumed session also keeps what an earlier configuration subscribed to: the
        // Sparkplug filters go when this session no longer reads the namespace.
        if let Err(error) = link.queue_subscribe(&self.subscriptions) {
            tracing::error!(%error, "could not encode the subscription");
        }
        if accepted.session_present && self.sparkplug.is_none() {
            let sparkplug = crate::contract::sparkplug::topic_filters();
            if let Err(error) = link.queue_unsubscribe(&sparkplug) {
                tracing::error!(%error, "could not encode the unsubscription");
            }
        }
        self.link = Some(link);
        self.set_connected(true);
    }

    /// Handles the packets a read left in the buffer without waking again for each, up to
    /// [`PACKETS_PER_WAKE`] and within the budget. Returns true when the session is over.
    fn handle_buffered(&mut self) -> bool {
        for _ in 0..PACKETS_PER_WAKE {
            if self.held_messages >= self.max_messages || self.held_bytes >= self.max_bytes {
                break;
            }
            let Some(link) = self.link.as_mut() else {
                break;
            };
            match link.next_buffered() {
                Ok(Some(incoming)) => {
                    if self.handle(incoming) {
                        return true;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    self.failed(&error);
                    break;
                }
            }
        }
        false
    }

    /// The next keep-alive ping is due at `at`.
    fn schedule_ping(&mut self, at: tokio::time::Instant) {
        self.ping_timer.as_mut().reset(at);
    }

    /// Keep-alive: a PINGREQ every half keep-alive. A broker that has sent nothing for
    /// 1.5 keep-alives while we were reading is taken as gone.
    fn ping(&mut self, paused: bool) {
        let now = tokio::time::Instant::now();
        self.schedule_ping(now + self.keep_alive / 2);
        if !paused && now.duration_since(self.last_read) > self.keep_alive * 3 / 2 {
            self.lost("no packet from the broker for 1.5 × keep-alive");
            return;
        }
        if let Some(link) = self.link.as_mut() {
            link.queue_ping(); // flushed with the acks
        }
    }

    /// Handles one packet. Returns true when the session is over.
    fn handle(&mut self, incoming: Incoming) -> bool {
        match incoming {
            Incoming::Publish(publish) => {
                let received = Received {
                    cost: publish.payload.len() + publish.topic.len() + MESSAGE_OVERHEAD_BYTES,
                    publish,
                    received_at: chrono::Utc::now().timestamp_micros(),
                    received_instant: Instant::now(),
                    connection: self.connection,
                };
                let is_sparkplug = received
                    .publish
                    .topic
                    .starts_with(crate::contract::sparkplug::NAMESPACE);
                let pendings = match self.sparkplug.as_mut() {
                    Some(host) if is_sparkplug => {
                        let outcome = host.handle(
                            &received.publish.topic,
                            &received.publish.payload,
                            received.received_at,
                        );
                        if let (Some((topic, payload)), Some(link)) =
                            (outcome.rebirth, self.link.as_mut())
                        {
                            match link.queue_publish(topic, payload) {
                                Ok(()) => {
                                    self.deps.metrics.ingest.sparkplug_rebirth_requests.inc();
                                }
                                Err(error) => tracing::warn!(%error, "rebirth request not sent"),
                            }
                        }
                        split(received, outcome.parsed)
                    }
                    _ => vec![Pending::parse(received, &self.topic_prefix, &self.limits)],
                };
                for pending in pendings {
                    self.hold(1, pending.cost() as i64);
                    if self.message_tx.send(pending).is_err() {
                        return true; // the writer is gone: shutting down
                    }
                }
            }
            Incoming::SubAck { refused } => {
                if refused.is_empty() {
                    tracing::debug!("subscribed");
                } else {
                    tracing::error!(
                        ?refused,
                        "broker refused a subscription (check its ACL and shared-subscription support)"
                    );
                }
            }
            Incoming::Other => {}
        }
        false
    }

    /// The writer is done with a message: release its budget and, when it came on the
    /// current connection, queue its acknowledgement.
    fn settle(&mut self, settled: Settled) {
        self.hold(-1, -(settled.cost as i64));
        if settled.pkid == 0 {
            return;
        }
        match self.link.as_mut() {
            Some(link) if settled.connection == self.connection => link.queue_ack(settled.pkid),
            // The broker resends it on the new connection; an ack now could acknowledge
            // another message that reuses the packet id.
            _ => {
                self.deps.metrics.ingest.stale_acks_dropped.inc();
            }
        }
    }

    /// Writes the queued acks and pings.
    async fn flush(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if !link.has_queued() {
            return;
        }
        match tokio::time::timeout(NETWORK_TIMEOUT, link.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.lost(&error.to_string()),
            Err(_) => self.lost("writing to the broker timed out"),
        }
    }

    /// Drops a connection that failed under our own writes; the next turn reconnects and
    /// the broker redelivers what was not acknowledged.
    fn lost(&mut self, why: &str) {
        tracing::warn!(client_id = self.client_id, why, "mqtt connection lost");
        self.deps.metrics.ingest.mqtt_connection_errors.inc();
        self.drop_link();
    }

    /// The connection failed while reading: say why, drop it, reconnect after the backoff.
    fn failed(&mut self, error: &LinkError) {
        self.on_connection_error(error);
        self.drop_link();
    }

    /// Drops the connection after a failure; the next one waits its backoff.
    fn drop_link(&mut self) {
        if self.link.take().is_some() {
            self.back_off();
        }
        self.set_connected(false);
    }

    /// Schedules the next connection attempt. The backoff doubles up to 10 s, and starts
    /// over only after a connection that lived [`HEALTHY_CONNECTION`].
    fn back_off(&mut self) {
        let now = tokio::time::Instant::now();
        if self
            .connected_at
            .take()
            .is_some_and(|at| now.duration_since(at) >= HEALTHY_CONNECTION)
        {
            self.backoff = FIRST_BACKOFF;
        }
        self.next_attempt = now + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn on_connection_error(&mut self, error: &LinkError) {
        self.set_connected(false);
        self.deps.metrics.ingest.mqtt_connection_errors.inc();
        if let LinkError::TooLarge(size) = error {
            // MQTT 3.1.1 cannot refuse one message: the broker resends it first on every
            // reconnect. Only the broker's own limit can keep such packets away (MQTT v5
            // declares ours to the broker, which then drops such a message for us).
            tracing::error!(
                client_id = self.client_id,
                size,
                "the broker sent a packet larger than ingest.max_packet_bytes; configure the \
                 broker's max_packet_size (Mosquitto) to at most ingest.max_packet_bytes, or \
                 ingest cannot move past it"
            );
        } else if let Some(sentence) =
            super::tls::explain(error, &self.mqtt, &self.options.endpoint.host)
        {
            // Retried with backoff (a certificate may be renewed), but said plainly: no
            // message arrives until it is fixed.
            tracing::error!(client_id = self.client_id, %error, "{sentence}");
        } else {
            tracing::warn!(client_id = self.client_id, %error, "mqtt connection error");
        }
    }

    fn set_connected(&mut self, connected: bool) {
        if self.connected != connected {
            self.connected = connected;
            self.deps
                .metrics
                .set_session_connected(&self.client_id, connected);
        }
    }

    /// Changes what this session holds (the gauges sum over sessions).
    fn hold(&mut self, messages: i64, bytes: i64) {
        self.held_messages = self.held_messages.saturating_add_signed(messages as isize);
        self.held_bytes = self.held_bytes.saturating_add_signed(bytes as isize);
        let ingest = &self.deps.metrics.ingest;
        ingest.pending_messages.inc_by(messages);
        ingest.pending_bytes.inc_by(bytes);
    }

    /// Clean stop: the writer has settled everything it wrote. Ack it, say DISCONNECT (so
    /// the broker keeps the session without waiting for a keep-alive to lapse), and go.
    async fn stop(mut self) {
        while let Ok(settled) = self.settled_rx.try_recv() {
            self.settle(settled);
        }
        if let Some(link) = self.link.as_mut() {
            link.queue_disconnect();
        }
        self.flush().await;
        if let Some(mut link) = self.link.take() {
            let _ = tokio::time::timeout(NETWORK_TIMEOUT, link.close()).await;
        }
        self.set_connected(false);
    }
}

/// One received message that means several things (a Sparkplug B death takes a node and
/// its devices offline) becomes one pending item per meaning. Only the last carries the
/// packet id: items settle in order, so the message is acknowledged once all of them
/// have committed. The message's cost goes with the last.
fn split(received: Received, parsed: Vec<Parsed>) -> Vec<Pending> {
    let mut parsed = parsed;
    if parsed.is_empty() {
        parsed.push(Parsed::Ignored {
            skipped: Default::default(),
        });
    }
    let last_idx = parsed.len() - 1;
    let mut items = Vec::with_capacity(parsed.len());
    let mut received = Some(received);
    for (item_idx, parsed) in parsed.into_iter().enumerate() {
        let item = if item_idx == last_idx {
            received.take().expect("the last item takes the message")
        } else {
            let original = received.as_ref().expect("the last item takes the message");
            let mut publish = original.publish.clone();
            publish.qos = QoS::AtMostOnce; // no ack of its own
            Received {
                publish,
                received_at: original.received_at,
                received_instant: original.received_instant,
                connection: original.connection,
                cost: MESSAGE_OVERHEAD_BYTES,
            }
        };
        items.push(Pending::parsed(item, parsed));
    }
    items
}

impl Drop for Poller {
    fn drop(&mut self) {
        // Aborted (injected crash) or finished: this session no longer counts as connected.
        self.set_connected(false);
        let (messages, bytes) = (self.held_messages as i64, self.held_bytes as i64);
        self.hold(-messages, -bytes);
    }
}
