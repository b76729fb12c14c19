//! TLS for `mqtts://` brokers.
//!
//! One crypto provider for the whole binary: ring, the one sqlx's TLS already uses. It is
//! set on the client configuration explicitly, so nothing depends on a process-wide
//! default provider (rustls panics when two are compiled in and none is installed, which
//! is what `mqtts://` did when rumqttc brought aws-lc-rs beside sqlx's ring).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use super::config::MqttConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {key} {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key} {path} holds no PEM certificate")]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("mqtt.tls_key_file {path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {detail}")]
    NoKey { path: PathBuf, detail: String },
    #[error("{key} {path}: {detail}")]
    Invalid {
        key: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "the system has no CA certificates to check the broker's against: set mqtt.tls_ca_file \
         (or install ca-certificates)"
    )]
    NoSystemRoots,
    #[error("mqtt.tls_cert_file and mqtt.tls_key_file go together: set both or neither")]
    HalfClientIdentity,
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client configuration for `mqtts://`: the CAs of `mqtt.tls_ca_file` (or the
/// system's roots), and the client certificate of `mqtt.tls_cert_file` and
/// `mqtt.tls_key_file` when the broker requires one.
pub fn client_config(mqtt: &MqttConfig) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    match &mqtt.tls_ca_file {
        Some(path) => {
            for cert in read_certs("mqtt.tls_ca_file", path)? {
                roots.add(cert).map_err(|error| TlsSetupError::Invalid {
                    key: "mqtt.tls_ca_file",
                    path: path.clone(),
                    detail: error.to_string(),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(TlsSetupError::NoSystemRoots);
            }
        }
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let config = match (&mqtt.tls_cert_file, &mqtt.tls_key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs("mqtt.tls_cert_file", cert)?, read_key(key)?)
            .map_err(|error| TlsSetupError::Invalid {
                key: "mqtt.tls_key_file",
                path: key.clone(),
                detail: format!("does not fit mqtt.tls_cert_file: {error}"),
            })?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsSetupError::HalfClientIdentity),
    };
    Ok(Arc::new(config))
}

fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(|source| TlsSetupError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsSetupError::Invalid {
            key,
            path: path.to_path_buf(),
            detail: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(|source| TlsSetupError::Read {
        key: "mqtt.tls_key_file",
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| TlsSetupError::NoKey {
        path: path.to_path_buf(),
        detail: error.to_string(),
    })
}

/// One sentence for an operator when the connection failed in TLS: which side refused
/// which certificate, and the setting to look at. `None` for a failure that is not TLS's.
pub fn explain(
    error: &(dyn std::error::Error + 'static),
    mqtt: &MqttConfig,
    host: &str,
) -> Option<String> {
    let tls = rustls_error(error)?;
    let trusted = match &mqtt.tls_ca_file {
        Some(path) => format!("the CA in mqtt.tls_ca_file ({})", path.display()),
        None => "the system's CA certificates (set mqtt.tls_ca_file for a private CA)".into(),
    };
    let client_cert = match &mqtt.tls_cert_file {
        Some(path) => format!(
            "forewarn's client certificate (mqtt.tls_cert_file, {})",
            path.display()
        ),
        None => "forewarn's client certificate".into(),
    };
    Some(match tls {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!(
            "TLS: the broker's certificate is not signed by {trusted}; check that the file holds \
             the CA that issued the broker's certificate"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "TLS: the broker's certificate has expired; renew it on the broker".into(),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "TLS: the broker's certificate is not valid yet (check both machines' clocks)".into(),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "TLS: the broker's certificate is not issued for `{host}`, the host in MQTT_URL; \
             connect by a name the certificate lists"
        ),
        rustls::Error::AlertReceived(AlertDescription::CertificateExpired) => {
            format!("TLS: the broker refused {client_cert}: it has expired")
        }
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired)
            if mqtt.tls_cert_file.is_none() =>
        {
            "TLS: the broker requires a client certificate; set mqtt.tls_cert_file and \
             mqtt.tls_key_file"
                .into()
        }
        rustls::Error::AlertReceived(AlertDescription::HandshakeFailure) => format!(
            "TLS: the broker ended the handshake: no TLS version or cipher in common, or it \
             wants a client certificate{}",
            match &mqtt.tls_cert_file {
                Some(_) => format!(" and refused {client_cert}"),
                None => " (set mqtt.tls_cert_file and mqtt.tls_key_file)".into(),
            }
        ),
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRevoked
            | AlertDescription::DecryptError,
        ) => format!(
            "TLS: the broker refused {client_cert}: it is not signed by a CA the broker trusts, \
             or it was revoked"
        ),
        other => format!("TLS with the broker failed: {other}"),
    })
}

/// The rustls error inside a connection error, wherever the error chain carries it
/// (tokio-rustls wraps it in an `io::Error`; TLS 1.3 checks the client's certificate after
/// the handshake, so the broker's alert arrives as an error of the first read).
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}
