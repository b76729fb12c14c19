//! One MQTT session: the event-loop poller and its writer.

use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, Transport,
};
use tokio::sync::{mpsc, oneshot};

use super::writer::Writer;
use super::{IngestDeps, IngestSettings};
use crate::config::{IngestConfig, MqttConfig};
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum MqttUrlError {
    #[error("MQTT_URL `{0}` is not a URL")]
    Parse(String),
    #[error("MQTT_URL scheme must be mqtt:// or mqtts://, got `{0}`")]
    Scheme(String),
    #[error("MQTT_URL `{0}` has no host")]
    NoHost(String),
}

/// A message as received, with its receipt times.
#[derive(Debug)]
pub(super) struct Received {
    pub publish: Publish,
    /// Wall clock, epoch µs: the time used when a payload has no `ts`, and for dead letters.
    pub received_at: i64,
    pub received_instant: Instant,
}

/// Builds the client options: QoS 1 session that survives reconnects (`clean_session =
/// false`, stable client id), manual acks, and a packet limit above the payload limit so
/// that an oversized payload is dead-lettered instead of breaking the connection.
pub fn mqtt_options(
    url: &str,
    client_id: &str,
    mqtt: &MqttConfig,
    ingest: &IngestConfig,
) -> Result<MqttOptions, MqttUrlError> {
    let parsed = url::Url::parse(url).map_err(|_| MqttUrlError::Parse(super::redact(url)))?;
    let (transport, default_port) = match parsed.scheme() {
        "mqtt" | "tcp" => (Transport::Tcp, 1883),
        "mqtts" | "ssl" => (Transport::tls_with_default_config(), 8883),
        other => return Err(MqttUrlError::Scheme(other.to_string())),
    };
    let host = parsed
        .host_str()
        .ok_or_else(|| MqttUrlError::NoHost(super::redact(url)))?;
    let mut options = MqttOptions::new(client_id, host, parsed.port().unwrap_or(default_port));
    options
        .set_transport(transport)
        .set_keep_alive(mqtt.keep_alive)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(ingest.max_packet_bytes, ingest.max_packet_bytes);
    if !parsed.username().is_empty() {
        options.set_credentials(parsed.username(), parsed.password().unwrap_or_default());
    }
    Ok(options)
}

pub(super) async fn run_session(
    options: MqttOptions,
    settings: IngestSettings,
    deps: IngestDeps,
    shutdown: Shutdown,
) {
    // Invariant: the request channel (acks) and the message channel hold at least the
    // broker's in-flight window, so neither the poller nor the writer can wait on the other.
    let capacity = settings.ingest.max_pending_messages;
    let client_id = options.client_id();
    let (client, event_loop) = AsyncClient::new(options, capacity);
    let (message_tx, message_rx) = mpsc::channel(capacity);
    let (stop_tx, stop_rx) = oneshot::channel();
    let poller = tokio::spawn(poll(
        event_loop,
        client.clone(),
        settings.subscriptions(),
        message_tx,
        deps.clone(),
        stop_rx,
    ));
    let writer = Writer::new(&settings, deps.clone(), client.clone());
    if !writer.run(message_rx, shutdown).await {
        // Die like a killed process: drop the connection without acks or DISCONNECT, so the
        // broker keeps the session and resends everything unacknowledged.
        poller.abort();
        let _ = poller.await;
        deps.metrics.set_mqtt_connected(false);
        return;
    }
    // Everything written is acked; the acks are queued ahead of the disconnect.
    if client.try_disconnect().is_err() {
        tracing::warn!(client_id, "could not queue the MQTT disconnect");
    }
    // If the broker is unreachable the poller never sees its disconnect go out.
    let _ = stop_tx.send(());
    if let Err(error) = poller.await {
        tracing::error!(%error, "mqtt poller task failed");
    }
    deps.metrics.set_mqtt_connected(false);
}

async fn poll(
    mut event_loop: EventLoop,
    client: AsyncClient,
    subscriptions: Vec<String>,
    message_tx: mpsc::Sender<Received>,
    deps: IngestDeps,
    mut stop_rx: oneshot::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let event = tokio::select! {
            event = event_loop.poll() => event,
            _ = &mut stop_rx => {
                // Give the queued acks and the disconnect a moment to go out.
                match tokio::time::timeout(Duration::from_secs(2), drain_until_disconnect(&mut event_loop)).await {
                    Ok(()) => {}
                    Err(_) => tracing::warn!("mqtt disconnect did not complete in 2 s"),
                }
                return;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                backoff = Duration::from_millis(100);
                deps.metrics.set_mqtt_connected(true);
                tracing::info!(session_present = connack.session_present, "mqtt connected");
                // Subscribing again is harmless on a resumed session and required on a new
                // one. try_: this task must never wait on the request channel it drains.
                let filters = subscriptions
                    .iter()
                    .map(|filter| rumqttc::SubscribeFilter::new(filter.clone(), QoS::AtLeastOnce));
                if let Err(error) = client.try_subscribe_many(filters) {
                    tracing::error!(%error, "could not queue the subscription");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let received = Received {
                    publish,
                    received_at: chrono::Utc::now().timestamp_micros(),
                    received_instant: Instant::now(),
                };
                deps.metrics.ingest.pending_messages.inc();
                if message_tx.send(received).await.is_err() {
                    return; // the writer is gone: shutting down
                }
            }
            Ok(Event::Incoming(Packet::SubAck(suback))) => {
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
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(error) => {
                deps.metrics.set_mqtt_connected(false);
                deps.metrics.ingest.mqtt_connection_errors.inc();
                tracing::warn!(%error, retry_in = ?backoff, "mqtt connection error");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut stop_rx => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn drain_until_disconnect(event_loop: &mut EventLoop) {
    loop {
        match event_loop.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
