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
//! Acks are written straight to the connection (rumqttc exposes its `Network`), tagged
//! with the connection they belong to: after a reconnect the broker redelivers what was
//! not acknowledged, possibly under other packet ids, so an ack for an older connection is
//! dropped instead of acknowledging an uncommitted message that happens to reuse its id.

use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, PubAck, Publish,
    QoS, StateError, Transport,
};
use tokio::sync::{mpsc, oneshot};

use super::writer::{Pending, Writer};
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

/// Builds the client options: QoS 1 session that survives reconnects (`clean_session =
/// false`, stable client id), manual acks, and a packet limit above the payload limit so
/// that an oversized payload is dead-lettered instead of breaking the connection. `mqtts://`
/// uses the CA and client certificate files of `mqtt` ([`super::tls`]); credentials come
/// from `mqtt.username` and `mqtt.password_file`, else from the URL (percent-decoded).
pub fn mqtt_options(
    url: &str,
    client_id: &str,
    mqtt: &MqttConfig,
    ingest: &IngestConfig,
) -> Result<MqttOptions, MqttSetupError> {
    let redacted = || crate::config::redact_url(url);
    let parsed = url::Url::parse(url).map_err(|_| MqttSetupError::Parse(redacted()))?;
    let (transport, default_port) = match parsed.scheme() {
        "mqtt" | "tcp" => (Transport::Tcp, 1883),
        "mqtts" | "ssl" => (
            Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
                super::tls::client_config(mqtt)?,
            )),
            8883,
        ),
        other => return Err(MqttSetupError::Scheme(other.to_string())),
    };
    let host = parsed
        .host_str()
        .ok_or_else(|| MqttSetupError::NoHost(redacted()))?;
    let mut options = MqttOptions::new(client_id, host, parsed.port().unwrap_or(default_port));
    options
        .set_transport(transport)
        // rumqttc panics below one second; configuration validation refuses such values,
        // and this keeps a library caller from reaching the panic.
        .set_keep_alive(mqtt.keep_alive.max(Duration::from_secs(1)))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(ingest.max_packet_bytes, ingest.max_packet_bytes);
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
    if !username.is_empty() || !password.is_empty() {
        options.set_credentials(username, password);
    }
    Ok(options)
}

pub(super) async fn run_session(
    options: MqttOptions,
    settings: IngestSettings,
    deps: IngestDeps,
    shared: std::sync::Arc<SharedLimits>,
    shutdown: Shutdown,
) {
    let client_id = options.client_id();
    let sessions = settings.ingest.session_count().max(1);
    let keep_alive = options.keep_alive();
    let host = options.broker_address().0;
    // Only subscriptions go through rumqttc's request channel; acks do not.
    let (client, event_loop) = AsyncClient::new(options, 16);
    let (message_tx, message_rx) = mpsc::unbounded_channel();
    let (settled_tx, settled_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let poller = Poller {
        event_loop,
        client,
        client_id: client_id.clone(),
        subscriptions: settings.subscriptions(),
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
        unflushed_acks: 0,
        keep_alive,
        mqtt: settings.mqtt.clone(),
        host,
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
        tracing::error!(client_id, %error, "mqtt poller task failed");
    }
}

struct Poller {
    event_loop: EventLoop,
    client: AsyncClient,
    client_id: String,
    subscriptions: Vec<String>,
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
    unflushed_acks: usize,
    keep_alive: Duration,
    /// For the sentence that explains a TLS failure.
    mqtt: MqttConfig,
    host: String,
}

/// What woke the poller.
enum Wake {
    Stop,
    Settled(Option<Settled>),
    Event(Result<Event, ConnectionError>),
    Ping,
}

impl Poller {
    async fn run(mut self, mut stop_rx: oneshot::Receiver<()>) {
        let mut backoff = Duration::from_millis(100);
        let mut paused_since: Option<Instant> = None;
        let mut next_ping = tokio::time::Instant::now() + self.keep_alive / 2;
        loop {
            // Settle everything the writer has finished, with one flush for all its acks.
            while let Ok(settled) = self.settled_rx.try_recv() {
                self.settle(settled).await;
            }
            self.flush_acks().await;

            let over_budget =
                self.held_messages >= self.max_messages || self.held_bytes >= self.max_bytes;
            let wake = if over_budget {
                if paused_since.is_none() {
                    paused_since = Some(Instant::now());
                    self.deps.metrics.ingest.read_pauses.inc();
                    tracing::debug!(
                        held_messages = self.held_messages,
                        held_bytes = self.held_bytes,
                        "at the pending limit: reading paused"
                    );
                }
                // Not reading: wait for the writer, and keep the connection alive meanwhile.
                tokio::select! {
                    biased;
                    _ = &mut stop_rx => Wake::Stop,
                    settled = self.settled_rx.recv() => Wake::Settled(settled),
                    _ = tokio::time::sleep_until(next_ping), if self.connected => Wake::Ping,
                }
            } else {
                if let Some(since) = paused_since.take() {
                    // Our pings were written around rumqttc's bookkeeping; their answers are
                    // still unread, so forget any ping rumqttc itself was waiting for.
                    self.event_loop.state.await_pingresp = false;
                    self.deps
                        .metrics
                        .ingest
                        .read_paused_seconds
                        .inc_by(since.elapsed().as_secs_f64());
                }
                tokio::select! {
                    biased;
                    _ = &mut stop_rx => Wake::Stop,
                    settled = self.settled_rx.recv(), if self.connected => Wake::Settled(settled),
                    event = self.event_loop.poll() => Wake::Event(event),
                }
            };
            match wake {
                Wake::Stop => return self.stop().await,
                Wake::Settled(Some(settled)) => self.settle(settled).await,
                Wake::Settled(None) => return, // the writer is gone
                Wake::Ping => {
                    next_ping = tokio::time::Instant::now() + self.keep_alive / 2;
                    if let Err(error) = self.write(Packet::PingReq).await {
                        self.lost(&error.to_string());
                    } else {
                        self.unflushed_acks += 1; // flushed with the acks
                    }
                }
                Wake::Event(Ok(event)) => {
                    backoff = Duration::from_millis(100);
                    if self.handle(event) {
                        return;
                    }
                }
                Wake::Event(Err(error)) => {
                    // rumqttc has dropped the connection; polling again reconnects.
                    self.on_connection_error(&error);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut stop_rx => return self.stop().await,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Handles one event of the event loop. Returns true when the session is over.
    fn handle(&mut self, event: Event) -> bool {
        match event {
            Event::Incoming(Packet::ConnAck(connack)) => {
                self.connection += 1;
                self.set_connected(true);
                tracing::info!(
                    client_id = self.client_id,
                    connection = self.connection,
                    session_present = connack.session_present,
                    "mqtt connected"
                );
                // Subscribing again is harmless on a resumed session and required on a new
                // one. try_: this task must never wait on the request channel it drains.
                let filters = self
                    .subscriptions
                    .iter()
                    .map(|filter| rumqttc::SubscribeFilter::new(filter.clone(), QoS::AtLeastOnce));
                if let Err(error) = self.client.try_subscribe_many(filters) {
                    tracing::error!(%error, "could not queue the subscription");
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                let received = Received {
                    cost: publish.payload.len() + publish.topic.len() + MESSAGE_OVERHEAD_BYTES,
                    publish,
                    received_at: chrono::Utc::now().timestamp_micros(),
                    received_instant: Instant::now(),
                    connection: self.connection,
                };
                let pending = Pending::parse(received, &self.topic_prefix, &self.limits);
                self.hold(1, pending.cost() as i64);
                if self.message_tx.send(pending).is_err() {
                    return true; // the writer is gone: shutting down
                }
            }
            Event::Incoming(Packet::SubAck(suback)) => {
                tracing::debug!(?suback.return_codes, "subscribed");
                if suback
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, rumqttc::SubscribeReasonCode::Failure))
                {
                    tracing::error!(
                        "broker refused a subscription (check its ACL and shared-subscription support)"
                    );
                }
            }
            Event::Outgoing(Outgoing::Disconnect) => return true,
            _ => {}
        }
        false
    }

    /// The writer is done with a message: release its budget and, when it came on the
    /// current connection, acknowledge it.
    async fn settle(&mut self, settled: Settled) {
        self.hold(-1, -(settled.cost as i64));
        if settled.pkid == 0 {
            return;
        }
        if settled.connection != self.connection || !self.connected {
            // The broker resends it on the new connection; an ack now could acknowledge
            // another message that reuses the packet id.
            self.deps.metrics.ingest.stale_acks_dropped.inc();
            return;
        }
        match self.write(Packet::PubAck(PubAck::new(settled.pkid))).await {
            Ok(()) => self.unflushed_acks += 1,
            Err(error) => self.lost(&error.to_string()),
        }
    }

    async fn flush_acks(&mut self) {
        if self.unflushed_acks == 0 || !self.connected {
            self.unflushed_acks = 0;
            return;
        }
        self.unflushed_acks = 0;
        let result = match self.event_loop.network.as_mut() {
            Some(network) => tokio::time::timeout(NETWORK_TIMEOUT, network.flush()).await,
            None => return,
        };
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.lost(&error.to_string()),
            Err(_) => self.lost("flush timed out"),
        }
    }

    /// Queues a packet on the current connection (flushed by `flush_acks`).
    async fn write(&mut self, packet: Packet) -> Result<(), StateError> {
        let Some(network) = self.event_loop.network.as_mut() else {
            return Err(StateError::ConnectionAborted);
        };
        match tokio::time::timeout(NETWORK_TIMEOUT, network.write(packet)).await {
            Ok(result) => result,
            Err(_) => Err(StateError::ConnectionAborted),
        }
    }

    /// Drops a connection that failed under our own writes; the next poll reconnects and
    /// the broker redelivers what was not acknowledged.
    fn lost(&mut self, why: &str) {
        tracing::warn!(client_id = self.client_id, why, "mqtt connection lost");
        self.event_loop.clean();
        self.set_connected(false);
        self.deps.metrics.ingest.mqtt_connection_errors.inc();
    }

    fn on_connection_error(&mut self, error: &ConnectionError) {
        self.set_connected(false);
        self.deps.metrics.ingest.mqtt_connection_errors.inc();
        if let ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) = error
        {
            // MQTT 3.1.1 cannot refuse one message: the broker resends it first on every
            // reconnect. Only the broker's own limit can keep such packets away.
            tracing::error!(
                client_id = self.client_id,
                size,
                "the broker sent a packet larger than ingest.max_packet_bytes; configure the \
                 broker's max_packet_size (Mosquitto) to at most ingest.max_packet_bytes, or \
                 ingest cannot move past it"
            );
        } else if let Some(sentence) = super::tls::explain(error, &self.mqtt, &self.host) {
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
            self.settle(settled).await;
        }
        if self.connected {
            if self.write(Packet::Disconnect).await.is_ok() {
                self.unflushed_acks += 1;
            }
            self.flush_acks().await;
        }
        self.set_connected(false);
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // Aborted (injected crash) or finished: this session no longer counts as connected.
        self.set_connected(false);
        let (messages, bytes) = (self.held_messages as i64, self.held_bytes as i64);
        self.hold(-messages, -bytes);
    }
}
