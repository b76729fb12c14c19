//! The embedded broker (`rumqttd`). In memory only, and its shared subscriptions lose or
//! duplicate unacknowledged messages (see shared/CRATES.md): it serves the one-process
//! demo and quick tests; durability and shared-subscription tests use Mosquitto.
//!
//! It serves this machine only, and only clients with a credential it generated at start:
//! it listens on a loopback address, and every CONNECT must carry either ingest's
//! credential or the devices' one (which the demo hands to its simulator). The devices'
//! credential cannot open a session under ingest's client id, so a device cannot take over
//! ingest's persistent session and receive (and acknowledge) its messages.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Bytes of one segment of the embedded broker's in-memory log, per subscription filter.
pub const EMBEDDED_SEGMENT_BYTES: usize = 16 * 1024 * 1024;
/// Segments kept per filter: the oldest is dropped beyond it.
pub const EMBEDDED_SEGMENTS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot pick a port for the embedded broker: {0}")]
    Port(#[source] std::io::Error),
    #[error("cannot generate the embedded broker's credentials: {0}")]
    Secret(#[source] std::io::Error),
    #[error(
        "the embedded broker listens on loopback only, not on {0}; for devices on other machines run a real broker and set MQTT_URL"
    )]
    NotLoopback(SocketAddr),
    #[error("embedded broker did not start listening on {0}")]
    NotListening(SocketAddr),
}

/// The MQTT version ingest speaks to the embedded broker: it runs rumqttd's 3.1.1
/// listener only.
pub const PROTOCOL: crate::config::MqttProtocol = crate::config::MqttProtocol::V311;

/// User name of ingest's credential.
pub const INGEST_USER: &str = "forewarn-ingest";
/// User name of the devices' credential.
pub const DEVICE_USER: &str = "devices";

/// A user name and the password generated for it. `Debug` shows no password.
#[derive(Clone)]
pub struct Credential {
    pub username: String,
    password: String,
}

impl Credential {
    fn generate(username: &str) -> Result<Credential, BrokerError> {
        Ok(Credential {
            username: username.to_string(),
            password: super::random_secret().map_err(BrokerError::Secret)?,
        })
    }

    fn accepts(&self, username: &str, password: &str) -> bool {
        // Both compared in full, whatever the first says, so timing tells nothing.
        let user_ok = super::same_secret(username, &self.username);
        let password_ok = super::same_secret(password, &self.password);
        user_ok && password_ok
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// A running embedded broker. It lives as long as the process (rumqttd cannot be stopped).
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
    ingest: Credential,
    devices: Credential,
}

impl EmbeddedBroker {
    /// The URL ingest connects with: `mqtt://forewarn-ingest:<password>@<addr>`.
    pub fn url(&self) -> String {
        self.url_for(&self.ingest)
    }

    /// The URL devices (the demo's simulator, tests' publishers) connect with.
    pub fn device_url(&self) -> String {
        self.url_for(&self.devices)
    }

    fn url_for(&self, credential: &Credential) -> String {
        // Both parts are of URL-safe characters (a fixed name, hex digits).
        format!(
            "mqtt://{}:{}@{}",
            credential.username, credential.password, self.addr
        )
    }
}

/// Who may connect: ingest's credential with any client id; the devices' credential with
/// any client id that does not start with ingest's (`ingest_client_id`, and
/// `{ingest_client_id}-{n}` for the sessions of `ingest.sessions`); nobody else.
fn admits(
    ingest: &Credential,
    devices: &Credential,
    ingest_client_id: &str,
    client_id: &str,
    username: &str,
    password: &str,
) -> bool {
    if ingest.accepts(username, password) {
        return true;
    }
    devices.accepts(username, password) && !client_id.starts_with(ingest_client_id)
}

/// Starts rumqttd on `listen` (a loopback address; port 0 picks a free one) in its own
/// thread, with freshly generated credentials, and waits until it accepts connections.
/// `ingest_client_id` is the client id ingest uses (`mqtt.client_id`): client ids that
/// start with it are reserved for ingest's credential.
pub async fn start(
    listen: SocketAddr,
    max_payload_bytes: usize,
    ingest_client_id: &str,
) -> Result<EmbeddedBroker, BrokerError> {
    if !listen.ip().is_loopback() {
        return Err(BrokerError::NotLoopback(listen));
    }
    let addr = if listen.port() == 0 {
        SocketAddr::new(listen.ip(), super::free_port().map_err(BrokerError::Port)?)
    } else {
        listen
    };
    let ingest = Credential::generate(INGEST_USER)?;
    let devices = Credential::generate(DEVICE_USER)?;
    let mut server = ServerSettings {
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
    let rule = Arc::new((
        ingest.clone(),
        devices.clone(),
        ingest_client_id.to_string(),
    ));
    server.set_auth_handler(move |client_id: String, username: String, password: String| {
        let (ingest, devices, ingest_client_id) = &*rule;
        let admitted = admits(
            ingest,
            devices,
            ingest_client_id,
            &client_id,
            &username,
            &password,
        );
        if !admitted {
            tracing::warn!(%client_id, %username, "embedded broker refused a connection: unknown credential, or the devices' credential with ingest's client id");
        }
        std::future::ready(admitted)
    });
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            // rumqttd keeps what is published in an in-memory log per subscription filter
            // (devices/+/telemetry, …/events, …/status), dropping its oldest segment when
            // a filter holds more than `max_segment_count`: 16 MiB × 4 bounds the broker at
            // 64 MiB per filter — a backlog of about 200,000 demo messages each — instead of
            // 1 GiB per filter, which the demo's RSS climbed towards at 30 MB a minute.
            max_segment_size: EMBEDDED_SEGMENT_BYTES,
            max_segment_count: EMBEDDED_SEGMENTS,
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
            tracing::info!(%addr, "embedded MQTT broker started (in memory, loopback, generated credentials; set MQTT_URL to use a real broker)");
            return Ok(EmbeddedBroker {
                addr,
                ingest,
                devices,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Err(BrokerError::NotListening(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generated_credentials_are_admitted_and_devices_cannot_be_ingest() {
        let ingest = Credential::generate(INGEST_USER).unwrap();
        let devices = Credential::generate(DEVICE_USER).unwrap();
        let admit = |client_id: &str, username: &str, password: &str| {
            admits(
                &ingest,
                &devices,
                "forewarn-ingest-host",
                client_id,
                username,
                password,
            )
        };
        assert!(admit("forewarn-ingest-host", INGEST_USER, &ingest.password));
        assert!(admit(
            "forewarn-ingest-host-3",
            INGEST_USER,
            &ingest.password
        ));
        assert!(admit("sim-1", DEVICE_USER, &devices.password));
        // The devices' credential cannot open ingest's sessions, nor look like one.
        assert!(!admit(
            "forewarn-ingest-host",
            DEVICE_USER,
            &devices.password
        ));
        assert!(!admit(
            "forewarn-ingest-host-0",
            DEVICE_USER,
            &devices.password
        ));
        assert!(!admit(
            "forewarn-ingest-hostile",
            DEVICE_USER,
            &devices.password
        ));
        // Wrong or crossed passwords, empty credentials.
        assert!(!admit("sim-1", DEVICE_USER, &ingest.password));
        assert!(!admit("sim-1", INGEST_USER, &devices.password));
        assert!(!admit("sim-1", INGEST_USER, ""));
        assert!(!admit("sim-1", "", ""));
        assert!(!format!("{ingest:?}").contains(&ingest.password));
    }
}
