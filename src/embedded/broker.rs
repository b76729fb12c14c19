//! The embedded broker (`rumqttd`). In memory only, and its shared subscriptions lose or
//! duplicate unacknowledged messages (see shared/CRATES.md): it serves the one-process
//! demo and quick tests; durability and shared-subscription tests use Mosquitto.

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot pick a port for the embedded broker: {0}")]
    Port(#[source] std::io::Error),
    #[error("embedded broker did not start listening on {0}")]
    NotListening(SocketAddr),
}

/// A running embedded broker. It lives as long as the process (rumqttd cannot be stopped).
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
}

impl EmbeddedBroker {
    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

/// Starts rumqttd on `listen` (port 0 picks a free one) in its own thread, and waits until
/// it accepts connections.
pub async fn start(
    listen: SocketAddr,
    max_payload_bytes: usize,
) -> Result<EmbeddedBroker, BrokerError> {
    let addr = if listen.port() == 0 {
        SocketAddr::new(listen.ip(), super::free_port().map_err(BrokerError::Port)?)
    } else {
        listen
    };
    let server = ServerSettings {
        name: "embedded".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_payload_bytes,
            max_inflight_count: 1000,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("embedded".to_string(), server)])),
        ..Config::default()
    };
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "embedded broker stopped");
            }
        })
        .map_err(BrokerError::Port)?;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            tracing::info!(%addr, "embedded MQTT broker started (in memory; set MQTT_URL to use a real broker)");
            return Ok(EmbeddedBroker { addr });
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Err(BrokerError::NotListening(addr))
}
