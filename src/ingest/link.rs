//! One connection to the broker, owned by the session's poller: TCP (and TLS), CONNECT,
//! then packets read and written at the poller's pace, MQTT v5 or 3.1.1.
//!
//! rumqttc's event loop reads and writes in one call, so a client that stops reading to
//! bound what it holds also stops writing its acknowledgements and pings. This link keeps
//! the two apart: [`Link::read`] is called only when the poller wants more messages,
//! while acks and pings are queued and flushed whenever it likes. Packets are encoded and
//! decoded by rumqttc's codecs (`mqttbytes`), not by hand.
//!
//! With MQTT v5 the client declares its limits in CONNECT: the session expiry (a replica
//! gone for good stops being sent its share once the expiry passes), a Receive Maximum
//! (the broker sends at most that many unacknowledged messages) and a Maximum Packet Size
//! (the broker drops a larger message for us instead of breaking the connection).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes as v5bytes;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::MqttProtocol;

/// How long connecting (TCP, TLS and CONNACK) may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to connect: parsed from `MQTT_URL` and the `mqtt` section once.
#[derive(Clone)]
pub(super) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What one session declares when it connects.
#[derive(Debug, Clone)]
pub(super) struct LinkOptions {
    pub endpoint: Arc<Endpoint>,
    pub client_id: String,
    pub protocol: MqttProtocol,
    pub keep_alive: Duration,
    /// MQTT v5 only: how long the broker keeps the session after the connection ends.
    pub session_expiry: Duration,
    /// MQTT v5 only: unacknowledged messages the broker may send at once.
    pub receive_maximum: u16,
    /// Largest packet read; declared to the broker with MQTT v5.
    pub max_packet_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("the broker refused the connection: {0}")]
    Refused(String),
    #[error("the broker closed the connection")]
    Closed,
    #[error("the broker ended the session: {0}")]
    Disconnected(String),
    #[error("the broker sent a packet of {0} bytes, more than ingest.max_packet_bytes")]
    TooLarge(usize),
    #[error("MQTT protocol error: {0}")]
    Protocol(String),
}

/// What the poller acts on.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A message, as rumqttc's 3.1.1 type whatever the protocol (the writer reads topic,
    /// payload, QoS, packet id and the DUP and retain flags).
    Publish(rumqttc::Publish),
    /// The answer to SUBSCRIBE: the filters the broker refused, as their reason codes.
    SubAck { refused: Vec<String> },
    /// Any other packet (PINGRESP, …): proof the connection is alive.
    Other,
}

/// What the broker said in CONNACK.
#[derive(Debug, Clone, Copy)]
pub(super) struct Accepted {
    pub session_present: bool,
    /// The keep-alive to keep: the broker's (MQTT v5 Server Keep Alive) when it set one.
    pub keep_alive: Duration,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub(super) struct Link {
    stream: Box<dyn Stream>,
    protocol: MqttProtocol,
    read_buf: BytesMut,
    write_buf: BytesMut,
    max_packet_bytes: usize,
}

impl Link {
    /// Opens the connection and waits for CONNACK (within [`CONNECT_TIMEOUT`]).
    pub async fn connect(options: &LinkOptions) -> Result<(Link, Accepted), LinkError> {
        tokio::time::timeout(CONNECT_TIMEOUT, Link::connect_inner(options))
            .await
            .map_err(|_| LinkError::Timeout("connecting to the broker"))?
    }

    async fn connect_inner(options: &LinkOptions) -> Result<(Link, Accepted), LinkError> {
        let endpoint = &options.endpoint;
        let tcp = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &endpoint.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                    .map_err(|error| LinkError::Protocol(format!("TLS server name: {error}")))?;
                let connector = rumqttc::tokio_rustls::TlsConnector::from(config.clone());
                Box::new(connector.connect(name, tcp).await?)
            }
        };
        let mut link = Link {
            stream,
            protocol: options.protocol,
            read_buf: BytesMut::with_capacity(64 * 1024),
            write_buf: BytesMut::with_capacity(16 * 1024),
            max_packet_bytes: options.max_packet_bytes,
        };
        link.queue_connect(options)?;
        link.flush().await?;
        let accepted = link.read_connack(options).await?;
        Ok((link, accepted))
    }

    fn queue_connect(&mut self, options: &LinkOptions) -> Result<(), LinkError> {
        let endpoint = &options.endpoint;
        let keep_alive = u16::try_from(options.keep_alive.as_secs()).unwrap_or(u16::MAX);
        let has_login = !endpoint.username.is_empty() || !endpoint.password.is_empty();
        match self.protocol {
            MqttProtocol::V311 => {
                let mut connect = v4::Connect::new(options.client_id.clone());
                connect.keep_alive = keep_alive;
                connect.clean_session = false;
                connect.login = has_login
                    .then(|| v4::Login::new(endpoint.username.clone(), endpoint.password.clone()));
                v4::Packet::Connect(connect)
                    .write(&mut self.write_buf, usize::MAX)
                    .map_err(codec_v4)?;
            }
            MqttProtocol::V5 => {
                let mut properties = v5::ConnectProperties::new();
                properties.session_expiry_interval = Some(seconds_u32(options.session_expiry));
                properties.receive_maximum = Some(options.receive_maximum.max(1));
                properties.max_packet_size =
                    Some(u32::try_from(options.max_packet_bytes).unwrap_or(u32::MAX));
                let connect = v5::Connect {
                    keep_alive,
                    client_id: options.client_id.clone(),
                    clean_start: false,
                    properties: Some(properties),
                };
                let login = has_login
                    .then(|| v5::Login::new(endpoint.username.clone(), endpoint.password.clone()));
                v5::Packet::Connect(connect, None, login)
                    .write(&mut self.write_buf, None)
                    .map_err(codec_v5)?;
            }
        }
        Ok(())
    }

    async fn read_connack(&mut self, options: &LinkOptions) -> Result<Accepted, LinkError> {
        loop {
            match self.decode()? {
                Some(Decoded::V4(v4::Packet::ConnAck(connack))) => {
                    if connack.code != v4::ConnectReturnCode::Success {
                        return Err(LinkError::Refused(format!("{:?}", connack.code)));
                    }
                    return Ok(Accepted {
                        session_present: connack.session_present,
                        keep_alive: options.keep_alive,
                    });
                }
                Some(Decoded::V5(v5::Packet::ConnAck(connack))) => {
                    if connack.code != v5::ConnectReturnCode::Success {
                        return Err(LinkError::Refused(format!("{:?}", connack.code)));
                    }
                    let server_keep_alive = connack
                        .properties
                        .as_ref()
                        .and_then(|properties| properties.server_keep_alive);
                    return Ok(Accepted {
                        session_present: connack.session_present,
                        // 0 would mean "no keep-alive": ours stays, to notice a dead link.
                        keep_alive: server_keep_alive
                            .filter(|seconds| *seconds > 0)
                            .map_or(options.keep_alive, |s| Duration::from_secs(s.into())),
                    });
                }
                Some(Decoded::V5(v5::Packet::Disconnect(disconnect))) => {
                    return Err(LinkError::Refused(disconnect_reason(
                        disconnect.reason_code as u8,
                    )));
                }
                Some(other) => {
                    return Err(LinkError::Protocol(format!(
                        "expected CONNACK, got {other:?}"
                    )));
                }
                None => self.fill().await?,
            }
        }
    }

    /// The next packet the poller acts on. Cancel-safe: bytes read before a cancellation
    /// stay buffered for the next call.
    pub async fn read(&mut self) -> Result<Incoming, LinkError> {
        loop {
            let Some(decoded) = self.decode()? else {
                self.fill().await?;
                continue;
            };
            return match decoded {
                Decoded::V4(packet) => incoming_v4(packet),
                Decoded::V5(packet) => incoming_v5(packet),
            };
        }
    }

    /// The next packet already in the buffer, without reading the socket.
    pub fn next_buffered(&mut self) -> Result<Option<Incoming>, LinkError> {
        match self.decode()? {
            None => Ok(None),
            Some(Decoded::V4(packet)) => incoming_v4(packet).map(Some),
            Some(Decoded::V5(packet)) => incoming_v5(packet).map(Some),
        }
    }

    /// Reads more bytes into the buffer.
    async fn fill(&mut self) -> Result<(), LinkError> {
        if self.stream.read_buf(&mut self.read_buf).await? == 0 {
            return Err(LinkError::Closed);
        }
        Ok(())
    }

    /// One whole packet from the buffer, or `None` when more bytes are needed. Only the
    /// frame check may say "more bytes": once a whole frame is in the buffer, any error of
    /// the codec is the packet's, never a reason to wait (the codec has taken the frame
    /// off the buffer by then).
    fn decode(&mut self) -> Result<Option<Decoded>, LinkError> {
        if self.read_buf.is_empty() {
            return Ok(None);
        }
        match self.protocol {
            MqttProtocol::V311 => {
                match rumqttc::mqttbytes::check(self.read_buf.iter(), self.max_packet_bytes) {
                    Ok(_) => {}
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
                    Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
                        return Err(LinkError::TooLarge(size));
                    }
                    Err(error) => return Err(codec_v4(error)),
                }
                v4::Packet::read(&mut self.read_buf, self.max_packet_bytes)
                    .map(|packet| Some(Decoded::V4(packet)))
                    .map_err(codec_v4)
            }
            MqttProtocol::V5 => {
                let max = u32::try_from(self.max_packet_bytes).unwrap_or(u32::MAX);
                let frame_length = match v5::check(self.read_buf.iter(), Some(max)) {
                    Ok(header) => header.frame_length(),
                    Err(v5bytes::Error::InsufficientBytes(_)) => return Ok(None),
                    Err(v5bytes::Error::PayloadSizeLimitExceeded { pkt_size, .. }) => {
                        return Err(LinkError::TooLarge(pkt_size));
                    }
                    Err(error) => return Err(codec_v5(error)),
                };
                let first = self.read_buf[0];
                // A DISCONNECT with no properties (`E0 00`, `E0 01 <reason>`), what
                // Mosquitto sends, and a 3.1.1 CONNACK from a broker that does not speak
                // MQTT 5: valid on the wire, refused by the codec.
                if first == 0xE0 && frame_length <= 3 {
                    let reason = self.read_buf.get(2).copied().unwrap_or(0);
                    let _ = self.read_buf.split_to(frame_length);
                    return Err(LinkError::Disconnected(disconnect_reason(reason)));
                }
                if first == 0x20 && frame_length == 4 && self.read_buf[3] != 0 {
                    let code = self.read_buf[3];
                    let _ = self.read_buf.split_to(frame_length);
                    return Err(LinkError::Refused(format!(
                        "return code {code} in MQTT 3.1.1's form: the broker does not speak \
                         MQTT 5; set mqtt.protocol = \"3.1.1\""
                    )));
                }
                v5::Packet::read(&mut self.read_buf, Some(max))
                    .map(|packet| Some(Decoded::V5(packet)))
                    .map_err(codec_v5)
            }
        }
    }

    /// Queues the acknowledgement of a QoS 1 message.
    pub fn queue_ack(&mut self, pkid: u16) {
        match self.protocol {
            MqttProtocol::V311 => {
                let _ = v4::Packet::PubAck(v4::PubAck::new(pkid)).write(&mut self.write_buf, 4);
            }
            MqttProtocol::V5 => {
                let _ = v5::Packet::PubAck(v5::PubAck::new(pkid, None))
                    .write(&mut self.write_buf, None);
            }
        }
    }

    pub fn queue_ping(&mut self) {
        match self.protocol {
            MqttProtocol::V311 => {
                let _ = v4::Packet::PingReq.write(&mut self.write_buf, 2);
            }
            MqttProtocol::V5 => {
                let _ = v5::Packet::PingReq(v5::PingReq).write(&mut self.write_buf, None);
            }
        }
    }

    /// Queues a QoS 0 PUBLISH (a Sparkplug B command).
    pub fn queue_publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), LinkError> {
        match self.protocol {
            MqttProtocol::V311 => {
                v4::Packet::Publish(v4::Publish::new(topic, rumqttc::QoS::AtMostOnce, payload))
                    .write(&mut self.write_buf, usize::MAX)
                    .map(drop)
                    .map_err(codec_v4)
            }
            MqttProtocol::V5 => v5::Packet::Publish(v5::Publish::new(
                topic,
                v5bytes::QoS::AtMostOnce,
                payload,
                None,
            ))
            .write(&mut self.write_buf, None)
            .map(drop)
            .map_err(codec_v5),
        }
    }

    /// Queues one SUBSCRIBE (packet id 1) for all `filters` at QoS 1.
    pub fn queue_subscribe(&mut self, filters: &[String]) -> Result<(), LinkError> {
        match self.protocol {
            MqttProtocol::V311 => {
                let mut subscribe = v4::Subscribe::new_many(
                    filters
                        .iter()
                        .map(|f| v4::SubscribeFilter::new(f.clone(), rumqttc::QoS::AtLeastOnce)),
                );
                subscribe.pkid = 1;
                v4::Packet::Subscribe(subscribe)
                    .write(&mut self.write_buf, usize::MAX)
                    .map_err(codec_v4)?;
            }
            MqttProtocol::V5 => {
                let mut subscribe = v5::Subscribe::new_many(
                    filters
                        .iter()
                        .map(|f| v5::Filter::new(f.clone(), v5bytes::QoS::AtLeastOnce)),
                    None,
                );
                subscribe.pkid = 1;
                v5::Packet::Subscribe(subscribe)
                    .write(&mut self.write_buf, None)
                    .map_err(codec_v5)?;
            }
        }
        Ok(())
    }

    /// Queues one UNSUBSCRIBE (packet id 2) for `filters`: a resumed session keeps the
    /// subscriptions of its earlier connections, including ones no longer wanted.
    pub fn queue_unsubscribe(&mut self, filters: &[String]) -> Result<(), LinkError> {
        if filters.is_empty() {
            return Ok(());
        }
        match self.protocol {
            MqttProtocol::V311 => {
                let unsubscribe = v4::Unsubscribe {
                    pkid: 2,
                    topics: filters.to_vec(),
                };
                v4::Packet::Unsubscribe(unsubscribe)
                    .write(&mut self.write_buf, usize::MAX)
                    .map(drop)
                    .map_err(codec_v4)
            }
            MqttProtocol::V5 => {
                let unsubscribe = v5::Unsubscribe {
                    pkid: 2,
                    filters: filters.to_vec(),
                    properties: None,
                };
                v5::Packet::Unsubscribe(unsubscribe)
                    .write(&mut self.write_buf, None)
                    .map(drop)
                    .map_err(codec_v5)
            }
        }
    }

    /// Queues DISCONNECT ("normal"): the broker keeps the session (until its expiry with
    /// MQTT v5) and publishes no will.
    pub fn queue_disconnect(&mut self) {
        match self.protocol {
            MqttProtocol::V311 => {
                let _ = v4::Packet::Disconnect.write(&mut self.write_buf, 2);
            }
            MqttProtocol::V5 => {
                let _ = v5::Packet::Disconnect(v5::Disconnect::new(
                    v5::DisconnectReasonCode::NormalDisconnection,
                ))
                .write(&mut self.write_buf, None);
            }
        }
    }

    /// Ends the connection in order (TLS close_notify, then FIN), so that what was just
    /// written (the last acks, DISCONNECT) is not thrown away by a reset.
    pub async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Whether packets are queued and not yet written.
    pub fn has_queued(&self) -> bool {
        !self.write_buf.is_empty()
    }

    /// Writes everything queued. Not cancel-safe: callers bound it with a timeout and
    /// drop the link when it fails or times out.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.write_buf).await?;
        self.write_buf.clear();
        self.stream.flush().await?;
        Ok(())
    }
}

/// A packet just decoded, for one call: never stored or sent on, so its size costs nothing
/// (boxing the larger variant would cost an allocation per message).
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "lives on the stack for one call")]
enum Decoded {
    V4(v4::Packet),
    V5(v5::Packet),
}

fn incoming_v4(packet: v4::Packet) -> Result<Incoming, LinkError> {
    Ok(match packet {
        v4::Packet::Publish(publish) => {
            if publish.qos == rumqttc::QoS::ExactlyOnce {
                return Err(LinkError::Protocol(
                    "the broker sent a QoS 2 message on a QoS 1 subscription".into(),
                ));
            }
            Incoming::Publish(publish)
        }
        v4::Packet::SubAck(suback) => Incoming::SubAck {
            refused: suback
                .return_codes
                .iter()
                .filter(|code| matches!(code, v4::SubscribeReasonCode::Failure))
                .map(|code| format!("{code:?}"))
                .collect(),
        },
        v4::Packet::Disconnect => return Err(LinkError::Disconnected("DISCONNECT".into())),
        _ => Incoming::Other,
    })
}

fn incoming_v5(packet: v5::Packet) -> Result<Incoming, LinkError> {
    Ok(match packet {
        v5::Packet::Publish(publish) => {
            let qos = match publish.qos {
                v5bytes::QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
                v5bytes::QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
                v5bytes::QoS::ExactlyOnce => {
                    return Err(LinkError::Protocol(
                        "the broker sent a QoS 2 message on a QoS 1 subscription".into(),
                    ));
                }
            };
            // No Topic Alias Maximum is declared, so every PUBLISH names its topic. A
            // topic that is not UTF-8 (a protocol violation) keeps its message: the writer
            // dead-letters it for its topic.
            let topic = String::from_utf8(publish.topic.to_vec())
                .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned());
            Incoming::Publish(rumqttc::Publish {
                dup: publish.dup,
                qos,
                retain: publish.retain,
                topic,
                pkid: publish.pkid,
                payload: publish.payload,
            })
        }
        v5::Packet::SubAck(suback) => Incoming::SubAck {
            refused: suback
                .return_codes
                .iter()
                .filter(|code| !matches!(code, v5::SubscribeReasonCode::Success(_)))
                .map(|code| format!("{code:?}"))
                .collect(),
        },
        v5::Packet::Disconnect(disconnect) => {
            let reason = disconnect_reason(disconnect.reason_code as u8);
            return Err(LinkError::Disconnected(
                match disconnect
                    .properties
                    .and_then(|properties| properties.reason_string)
                {
                    Some(text) => format!("{reason}: {text}"),
                    None => reason,
                },
            ));
        }
        _ => Incoming::Other,
    })
}

/// An MQTT v5 DISCONNECT reason code, named.
fn disconnect_reason(code: u8) -> String {
    let name = match code {
        0x00 => "normal disconnection",
        0x80 => "unspecified error",
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x87 => "not authorized",
        0x89 => "server busy",
        0x8B => "server shutting down",
        0x8D => "keep-alive timeout",
        0x8E => "session taken over (another client connected with this client id)",
        0x93 => "receive maximum exceeded",
        0x95 => "packet too large",
        0x97 => "quota exceeded",
        0x98 => "administrative action",
        0x9C => "use another server",
        _ => "other reason",
    };
    format!("{name} (reason code 0x{code:02X})")
}

fn codec_v4(error: rumqttc::mqttbytes::Error) -> LinkError {
    LinkError::Protocol(error.to_string())
}

fn codec_v5(error: v5bytes::Error) -> LinkError {
    LinkError::Protocol(error.to_string())
}

/// Seconds for an MQTT v5 interval; `u32::MAX` would mean "never expires", so it is capped
/// just below.
fn seconds_u32(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).map_or(u32::MAX - 1, |s| s.min(u32::MAX - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(protocol: MqttProtocol) -> (Link, tokio::io::DuplexStream) {
        let (ours, broker) = tokio::io::duplex(1 << 16);
        let link = Link {
            stream: Box::new(ours),
            protocol,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            max_packet_bytes: 1 << 20,
        };
        (link, broker)
    }

    #[tokio::test]
    async fn a_disconnect_without_properties_names_its_reason() {
        let (mut link, mut broker) = pair(MqttProtocol::V5);
        broker.write_all(&[0xE0, 0x01, 0x8E]).await.unwrap();
        let error = link.read().await.unwrap_err();
        assert!(error.to_string().contains("session taken over"), "{error}");
        let (mut link, mut broker) = pair(MqttProtocol::V5);
        broker.write_all(&[0xE0, 0x00]).await.unwrap();
        assert!(matches!(link.read().await, Err(LinkError::Disconnected(_))));
    }

    #[tokio::test]
    async fn a_broker_without_mqtt5_is_named() {
        let (mut link, mut broker) = pair(MqttProtocol::V5);
        // MQTT 3.1.1's CONNACK: "unacceptable protocol version".
        broker.write_all(&[0x20, 0x02, 0x00, 0x01]).await.unwrap();
        let error = link.read().await.unwrap_err();
        assert!(error.to_string().contains("mqtt.protocol"), "{error}");
    }

    #[tokio::test]
    async fn a_packet_split_across_reads_is_read_whole_and_a_bad_body_is_an_error() {
        let (mut link, mut broker) = pair(MqttProtocol::V5);
        let mut encoded = BytesMut::new();
        let mut publish = v5::Publish::new(
            "devices/d1/telemetry",
            v5bytes::QoS::AtLeastOnce,
            b"{\"temp\": 1}".to_vec(),
            None,
        );
        publish.pkid = 7;
        v5::Packet::Publish(publish)
            .write(&mut encoded, None)
            .unwrap();
        let (head, tail) = encoded.split_at(7);
        let (head, tail) = (head.to_vec(), tail.to_vec());
        let writer = tokio::spawn(async move {
            broker.write_all(&head).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            broker.write_all(&tail).await.unwrap();
            // A whole PUBACK frame whose body is cut short: an error, never a wait.
            broker.write_all(&[0x40, 0x01, 0x00]).await.unwrap();
            broker
        });
        match link.read().await.unwrap() {
            Incoming::Publish(publish) => {
                assert_eq!(publish.topic, "devices/d1/telemetry");
                assert_eq!(&publish.payload[..], b"{\"temp\": 1}");
            }
            other => panic!("expected a publish, got {other:?}"),
        }
        let _broker = writer.await.unwrap();
        assert!(matches!(
            tokio::time::timeout(Duration::from_secs(1), link.read()).await,
            Ok(Err(LinkError::Protocol(_)))
        ));
    }
}
