//! One command on a fresh machine: an in-process MQTT broker when `MQTT_URL` is unset, and
//! a private PostgreSQL cluster, started from the server binaries on the machine, when
//! `DATABASE_URL` is unset. The test suite uses the same helpers.

pub mod broker;
pub mod mosquitto;
pub mod postgres;

/// Picks a free TCP port on loopback. The port is released before it is used, so a race
/// with another process is possible but harmless on a test machine (the start then fails
/// loudly).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
