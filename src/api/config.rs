//! The `http` section.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz`; env `FOREWARN_HTTP_ADDR`.
    pub addr: SocketAddr,
    /// Requests a second one API key may make (a token bucket per key, per process).
    pub rate_limit: u32,
    /// Requests one API key may make at once above its rate.
    pub rate_burst: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:8080".parse().expect("literal address"),
            rate_limit: 100,
            rate_burst: 200,
        }
    }
}

impl HttpConfig {
    /// Rejects limits that would refuse every request.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        crate::config::rules::rule(
            (1..=1_000_000).contains(&self.rate_limit),
            "http.rate_limit",
            self.rate_limit,
            "it must be between 1 and 1000000 requests a second",
        )?;
        crate::config::rules::rule(
            self.rate_burst >= 1 && self.rate_burst <= 1_000_000,
            "http.rate_burst",
            self.rate_burst,
            "it must be between 1 and 1000000",
        )
    }
}
