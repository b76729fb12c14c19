//! One command on a fresh machine: an in-process MQTT broker when `MQTT_URL` is unset, and
//! a private PostgreSQL cluster, started from the server binaries on the machine, when
//! `DATABASE_URL` is unset. The test suite uses the same helpers.
//!
//! Both serve this machine only and only whoever holds their generated credentials: the
//! broker listens on loopback and asks every client for a password; the cluster listens on
//! a Unix socket inside its own 0700 data directory and asks for a password too.

pub mod broker;
pub mod config;
pub mod mosquitto;
pub mod postgres;

/// Picks a free TCP port on loopback. The port is released before it is used, so a race
/// with another process is possible but harmless on a test machine (the start then fails
/// loudly).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A new secret: 32 bytes from the operating system's random source, as 64 lowercase hex
/// digits (safe in a URL, a shell word and an SQL literal without escaping).
pub fn random_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Compares two secrets in time that depends only on their lengths, so that a client cannot
/// learn a password byte by byte from how fast it is refused.
pub(crate) fn same_secret(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_hex_and_differ() {
        let first = random_secret().unwrap();
        let second = random_secret().unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first, second);
        assert!(same_secret(&first, &first.clone()));
        assert!(!same_secret(&first, &second));
        assert!(!same_secret(&first, &first[..63]));
        assert!(!same_secret("", &first));
    }
}
