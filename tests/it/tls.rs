//! `mqtts://` against a real Mosquitto TLS listener that requires client certificates
//! (`require_certificate`, `use_identity_as_username`), with a CA and certificates made by
//! the test (rcgen). Ingest connects and stores; a wrong CA or an expired certificate gives
//! one sentence that says which, and never a panic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use forewarn::config::MqttConfig;
use forewarn::embedded::mosquitto::{Mosquitto, MosquittoTls};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};
use rumqttc::{AsyncClient, Event, Packet, QoS};

use crate::support::*;

/// A CA and the certificates signed by it, as PEM files in `dir`.
struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    ca_file: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(unique(&format!("forewarn-pki-{name}-")));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("forewarn test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let ca_file = write(&dir, "ca.pem", &cert.pem());
        Pki {
            dir,
            ca: Issuer::new(params, key),
            ca_file,
        }
    }

    /// A certificate for `common_name` (and `names` as its subject alternative names),
    /// valid now or, with `expired`, only during 2020. Returns (certificate, key) files.
    fn issue(
        &self,
        file: &str,
        common_name: &str,
        names: &[&str],
        expired: bool,
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (
            write(&self.dir, &format!("{file}.pem"), &cert.pem()),
            write(&self.dir, &format!("{file}.key"), &key.serialize_pem()),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Test-only key files, readable by Mosquitto after it drops root for its own user.
fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

/// Mosquitto with a TLS listener whose certificate the CA of `pki` signed, requiring
/// client certificates from the same CA.
fn tls_broker(pki: &Pki) -> Mosquitto {
    let (cert_file, key_file) = pki.issue("broker", "broker", &["localhost", "127.0.0.1"], false);
    Mosquitto::start_tls(&MosquittoTls {
        ca_file: pki.ca_file.clone(),
        cert_file,
        key_file,
        require_certificate: true,
    })
    .expect("this test needs Mosquitto")
}

fn tls_config(ca_file: &Path, identity: Option<(PathBuf, PathBuf)>) -> MqttConfig {
    let (tls_cert_file, tls_key_file) = match identity {
        Some((cert, key)) => (Some(cert), Some(key)),
        None => (None, None),
    };
    MqttConfig {
        tls_ca_file: Some(ca_file.to_path_buf()),
        tls_cert_file,
        tls_key_file,
        ..MqttConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_client_certificates_connects_and_ingests() {
    init_logs();
    let pki = Pki::new("good");
    let broker = tls_broker(&pki);
    let db = TestDb::new().await;
    let prefix = unique("tls");
    let identity = pki.issue("ingest", "forewarn-ingest", &[], false);
    let mut settings = ingest_settings(&TestBroker::External(broker.url()), &prefix);
    settings.mqtt = MqttConfig {
        client_id: settings.mqtt.client_id.clone(),
        topic_prefix: prefix.clone(),
        keep_alive: settings.mqtt.keep_alive,
        ..tls_config(&pki.ca_file, Some(identity))
    };
    let ingest = RunningIngest::start(settings, db.store.clone()).await;

    // A device with a certificate of its own publishes over TLS too.
    let device_identity = pki.issue("device", "TLS-1", &[], false);
    let options = forewarn::ingest::mqtt_options(
        &broker.url(),
        &unique("tls-device-"),
        &tls_config(&pki.ca_file, Some(device_identity)),
        &forewarn::config::IngestConfig::default(),
    )
    .unwrap();
    let (client, mut event_loop) = AsyncClient::new(options, 100);
    let n_messages = 20;
    let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0usize);
    let poller = tokio::spawn(async move {
        let mut n_acked = 0;
        while let Ok(event) = event_loop.poll().await {
            if let Event::Incoming(Packet::PubAck(_)) = event {
                n_acked += 1;
                acked_tx.send_replace(n_acked);
            }
        }
    });
    for message_idx in 0..n_messages {
        let ts = now_rfc3339(chrono::Duration::milliseconds(
            -(n_messages - message_idx) * 10,
        ));
        client
            .publish(
                format!("{prefix}/TLS-1/telemetry"),
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"ts": "{ts}", "metrics": {{"a": {message_idx}}}}}"#),
            )
            .await
            .unwrap();
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        acked_rx.wait_for(|n| *n >= n_messages as usize),
    )
    .await
    .expect("the broker acknowledged the device's messages over TLS")
    .unwrap();
    let pool = db.query().await;
    wait_for_count(&pool, "select count(*) from telemetry", n_messages).await;
    ingest.stop().await;
    poller.abort();
}

/// `forewarn ingest` as a process, pointed at the TLS broker with `config`; returns the
/// log once a line containing `expect` appears (the process is still running: no panic,
/// it keeps retrying), or panics with the log after 15 s.
async fn ingest_log_until(broker: &Mosquitto, env: &[(&str, String)], expect: &str) -> String {
    let db = TestDb::new().await;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_forewarn"));
    command
        .arg("ingest")
        .env("DATABASE_URL", &db.url)
        .env("MQTT_URL", broker.url())
        .env("FOREWARN_HTTP_ADDR", "127.0.0.1:0")
        .env("FOREWARN_MQTT__CLIENT_ID", unique("fw-tls-"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut process = command.spawn().unwrap();
    let mut stderr = process.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut log);
        String::from_utf8_lossy(&log).into_owned()
    });
    let mut stdout = process.stdout.take().unwrap();
    let stdout_reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut log);
        String::from_utf8_lossy(&log).into_owned()
    });
    // Long enough for the first connection attempts and their backoff.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let running = process.try_wait().unwrap().is_none();
    sigterm(&process);
    let _ = process.wait();
    let log = format!(
        "{}{}",
        reader.join().unwrap(),
        stdout_reader.join().unwrap()
    );
    assert!(
        running,
        "the process must keep running (and retrying): {log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains(expect),
        "expected `{expect}` in the log:\n{log}"
    );
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_an_expired_certificate_is_one_clear_sentence() {
    init_logs();
    let pki = Pki::new("broker");
    let broker = tls_broker(&pki);
    let (cert, key) = pki.issue("ingest", "forewarn-ingest", &[], false);
    let files = |ca: &Path, cert: &Path, key: &Path| {
        vec![
            ("FOREWARN_MQTT__TLS_CA_FILE", ca.display().to_string()),
            ("FOREWARN_MQTT__TLS_CERT_FILE", cert.display().to_string()),
            ("FOREWARN_MQTT__TLS_KEY_FILE", key.display().to_string()),
        ]
    };

    // forewarn trusts another CA than the one that signed the broker's certificate.
    let other = Pki::new("other");
    ingest_log_until(
        &broker,
        &files(&other.ca_file, &cert, &key),
        "the broker's certificate is not signed by the CA in mqtt.tls_ca_file",
    )
    .await;

    // forewarn's client certificate has expired: the broker refuses it.
    let (expired_cert, expired_key) = pki.issue("expired", "forewarn-ingest", &[], true);
    ingest_log_until(
        &broker,
        &files(&pki.ca_file, &expired_cert, &expired_key),
        "client certificate (mqtt.tls_cert_file",
    )
    .await;
    ingest_log_until(
        &broker,
        &files(&pki.ca_file, &expired_cert, &expired_key),
        "): it has expired",
    )
    .await;

    // The broker requires a client certificate and none is configured.
    ingest_log_until(
        &broker,
        &[(
            "FOREWARN_MQTT__TLS_CA_FILE",
            pki.ca_file.display().to_string(),
        )],
        "the broker requires a client certificate",
    )
    .await;

    // A missing file stops the process at once with one sentence naming the key.
    // (It used to leave the process serving its probes with ingest dead.)
    let missing = pki.dir.join("missing.pem");
    let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_forewarn"))
        .arg("ingest")
        .env("DATABASE_URL", TestDb::new().await.url)
        .env("MQTT_URL", broker.url())
        .env("FOREWARN_HTTP_ADDR", "127.0.0.1:0")
        .env("FOREWARN_MQTT__TLS_CA_FILE", &missing)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while process.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = process.kill();
            panic!("forewarn ingest kept running with an unreadable mqtt.tls_ca_file");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = process.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot read mqtt.tls_ca_file") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// A password with `@`, `%` and `:` in MQTT_URL is percent-decoded before it is sent.
#[test]
fn credentials_in_the_url_are_percent_decoded() {
    let options = forewarn::ingest::mqtt_options(
        "mqtt://fleet%40acme:p%40ss%25w%3Ard@127.0.0.1:1883",
        "fw-test",
        &MqttConfig::default(),
        &forewarn::config::IngestConfig::default(),
    )
    .unwrap();
    let login = options.credentials().unwrap();
    assert_eq!(
        (login.username.as_str(), login.password.as_str()),
        ("fleet@acme", "p@ss%w:rd")
    );
}
