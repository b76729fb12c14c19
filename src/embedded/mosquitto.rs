//! A private Mosquitto process with forewarn's own configuration (a wide in-flight
//! window, unbounded queues so that nothing is dropped while ingest holds acks), for
//! benchmarks and durability tests that must not depend on the system broker's settings.
//! With persistence on ([`Mosquitto::start_persistent`]) it can be restarted on the same
//! port ([`Mosquitto::restart`]) keeping its sessions and the messages they hold.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MosquittoError {
    #[error("mosquitto is not installed (apt-get install mosquitto), or set MQTT_URL")]
    NotInstalled,
    #[error("mosquitto io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("mosquitto did not start listening on port {0}")]
    NotListening(u16),
}

/// A running Mosquitto; killed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    tls: bool,
}

/// A TLS listener: Mosquitto's `cafile`, `certfile` and `keyfile` (PEM), and whether
/// clients must present a certificate signed by the CA, whose common name is then their
/// user name (`require_certificate`, `use_identity_as_username`).
#[derive(Debug, Clone)]
pub struct MosquittoTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub require_certificate: bool,
}

impl Mosquitto {
    /// Starts Mosquitto on a free loopback port. `max_inflight` is the per-client window of
    /// unacknowledged QoS 1 messages (Mosquitto's default is 20). Its packet limit is
    /// forewarn's default `ingest.max_packet_bytes`, as the two must agree.
    pub fn start(max_inflight: u16) -> Result<Mosquitto, MosquittoError> {
        Mosquitto::start_with(
            max_inflight,
            crate::config::IngestConfig::default().max_packet_bytes,
        )
    }

    /// Starts Mosquitto refusing packets larger than `max_packet_bytes` (a client that sends
    /// one is disconnected), so that it never forwards one that ingest cannot read.
    pub fn start_with(
        max_inflight: u16,
        max_packet_bytes: usize,
    ) -> Result<Mosquitto, MosquittoError> {
        Mosquitto::start_listener(max_inflight, max_packet_bytes, None, false)
    }

    /// Starts Mosquitto with persistence on (`persistence true`, in its own directory):
    /// stopped with SIGTERM it writes its sessions — subscriptions, and the QoS 1 messages
    /// queued or in flight for each — to disk, and reads them back when it starts again
    /// ([`Mosquitto::restart`]).
    pub fn start_persistent(max_inflight: u16) -> Result<Mosquitto, MosquittoError> {
        Mosquitto::start_listener(
            max_inflight,
            crate::config::IngestConfig::default().max_packet_bytes,
            None,
            true,
        )
    }

    /// Starts Mosquitto with a TLS listener only (`mqtts://`).
    pub fn start_tls(tls: &MosquittoTls) -> Result<Mosquitto, MosquittoError> {
        Mosquitto::start_listener(
            1000,
            crate::config::IngestConfig::default().max_packet_bytes,
            Some(tls),
            false,
        )
    }

    fn start_listener(
        max_inflight: u16,
        max_packet_bytes: usize,
        tls: Option<&MosquittoTls>,
        persistent: bool,
    ) -> Result<Mosquitto, MosquittoError> {
        let binary = [
            "/usr/sbin/mosquitto",
            "/usr/local/sbin/mosquitto",
            "/usr/bin/mosquitto",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .ok_or(MosquittoError::NotInstalled)?;
        let port = super::free_port()?;
        let dir =
            std::env::temp_dir().join(format!("forewarn-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("mosquitto.conf");
        let tls_lines = match tls {
            None => String::new(),
            Some(tls) => format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\nuse_identity_as_username {}\n",
                tls.ca_file.display(),
                tls.cert_file.display(),
                tls.key_file.display(),
                tls.require_certificate,
                tls.require_certificate,
            ),
        };
        // Started as root, Mosquitto drops to the user `mosquitto`, which could not write
        // its persistence file into this directory: it stays the user that started it
        // (`user` matters only when started as root).
        let persistence_lines = if persistent {
            format!(
                "persistence true\npersistence_location {}/\nuser root\n",
                dir.display()
            )
        } else {
            "persistence false\n".to_string()
        };
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\n{tls_lines}\
                 allow_anonymous true\n\
                 {persistence_lines}\
                 max_inflight_messages {max_inflight}\n\
                 max_queued_messages 0\n\
                 max_queued_bytes 0\n\
                 max_packet_size {max_packet_bytes}\n\
                 log_dest stderr\n\
                 log_type error\n\
                 log_type warning\n"
            ),
        )?;
        let child = spawn(&binary, &dir)?;
        let mosquitto = Mosquitto {
            child,
            binary,
            port,
            dir,
            tls: tls.is_some(),
        };
        if !super::postgres::wait_for_port(port, Duration::from_secs(10)) {
            return Err(MosquittoError::NotListening(port));
        }
        Ok(mosquitto)
    }

    /// Stops Mosquitto as an operator does (SIGTERM, then waits for it to exit: with
    /// persistence on it saves its sessions first) and starts it again on the same port
    /// with the same configuration. Its clients see their connections end and must
    /// reconnect.
    pub fn restart(&mut self) -> Result<(), MosquittoError> {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        self.child.wait()?;
        self.child = spawn(&self.binary, &self.dir)?;
        if !super::postgres::wait_for_port(self.port, Duration::from_secs(10)) {
            return Err(MosquittoError::NotListening(self.port));
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// What Mosquitto logged (errors and warnings).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Mosquitto on `dir`'s configuration, logging to `dir/mosquitto.log` (appended: a
/// restart keeps what the previous run logged).
fn spawn(binary: &std::path::Path, dir: &std::path::Path) -> Result<Child, MosquittoError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("mosquitto.log"))?;
    Ok(Command::new(binary)
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
