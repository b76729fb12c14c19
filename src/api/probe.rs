//! `forewarn healthcheck`: the client side of `/readyz`, for container healthchecks in
//! images that carry no HTTP client (the image has no curl or wget).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("nothing answers on {addr} ({source}): is forewarn running with this http.addr?")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}/readyz did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr}/readyz: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("not ready: {addr}/readyz answered {status}: {body}")]
    NotReady {
        addr: SocketAddr,
        status: String,
        body: String,
    },
}

/// Where to probe the server listening on `listen`: a wildcard address is probed on
/// loopback.
pub fn probe_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GETs `/readyz` on `addr`; `Ok` with the body on 200, the reason otherwise.
pub async fn probe_ready(addr: SocketAddr, timeout: Duration) -> Result<String, ProbeError> {
    tokio::time::timeout(timeout, probe(addr))
        .await
        .map_err(|_| ProbeError::Timeout { addr, timeout })?
}

async fn probe(addr: SocketAddr) -> Result<String, ProbeError> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let io = |source| ProbeError::Io { addr, source };
    stream
        .write_all(
            format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(io)?;
    let mut response = Vec::new();
    // The body is a few hundred bytes; a larger answer is not ours.
    stream
        .take(64 * 1024)
        .read_to_end(&mut response)
        .await
        .map_err(io)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_once(' '))
        .map(|(_, status)| status.trim().to_string())
        .unwrap_or_default();
    if status.starts_with("200") {
        Ok(body.trim().to_string())
    } else {
        Err(ProbeError::NotReady {
            addr,
            status,
            body: body.trim().chars().take(500).collect(),
        })
    }
}
