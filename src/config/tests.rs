use std::time::Duration;

use super::*;
use crate::ingest::config::MAX_SESSIONS;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_load_without_file() {
    let config = Config::load(None, env(&[])).unwrap();
    assert_eq!(config.mqtt.topic_prefix, "devices");
    assert!(config.ingest.auto_register);
    assert_eq!(config.http.addr.port(), 8080);
    assert_eq!(
        config.storage.dead_letter_retention,
        Some(Duration::from_secs(30 * 86_400))
    );
}

#[test]
fn environment_overrides_file() {
    let dir = std::env::temp_dir().join(format!("forewarn-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("forewarn.toml");
    std::fs::write(
        &path,
        "[ingest]\nbatch_max_readings = 100\nbatch_max_age = \"250ms\"\n\
             [storage]\ndead_letter_retention = \"off\"\n",
    )
    .unwrap();
    let config = Config::load(
        Some(&path),
        env(&[
            ("DATABASE_URL", "postgres://localhost/x"),
            ("MQTT_URL", "mqtt://127.0.0.1:1883"),
            ("FOREWARN_HTTP_ADDR", "127.0.0.1:0"),
            ("FOREWARN_INGEST__AUTO_REGISTER", "false"),
            ("FOREWARN_INGEST__SHARED_GROUP", "ingest"),
            ("FOREWARN_STORAGE__TIMESCALEDB", "off"),
            ("FOREWARN_INGEST__MAX_AGE", "off"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(config.ingest.batch_max_readings, 100);
    assert_eq!(config.ingest.batch_max_age, Duration::from_millis(250));
    assert!(!config.ingest.auto_register);
    assert_eq!(config.ingest.shared_group.as_deref(), Some("ingest"));
    assert_eq!(config.storage.timescaledb, TimescaleMode::Off);
    assert_eq!(config.ingest.max_age, None);
    assert_eq!(
        config.storage.retention,
        Some(Duration::from_secs(400 * 86_400))
    );
    assert_eq!(config.storage.dead_letter_retention, None);
    assert_eq!(
        config.database.url.as_deref(),
        Some("postgres://localhost/x")
    );
    assert_eq!(config.http.addr.port(), 0);
}

/// The sentence of a configuration that fails to load.
fn load_error(pairs: &[(&str, &str)]) -> String {
    Config::load(None, env(pairs)).unwrap_err().to_string()
}

#[test]
fn environment_values_take_the_type_of_their_key() {
    let config = Config::load(
        None,
        env(&[
            ("FOREWARN_MQTT__CLIENT_ID", "1234"),
            ("FOREWARN_INGEST__SHARED_GROUP", "true"),
            ("FOREWARN_INGEST__BATCH_MAX_READINGS", "100"),
            ("FOREWARN_MQTT__TOPIC_PREFIX", "false"),
            ("MQTT_URL", "mqtt://127.0.0.1:1883"),
            ("FOREWARN_TRAIN__COST_FALSE_ALARM", "7"),
            ("FOREWARN_TRAIN__NEGATIVE_SAMPLE", "0.5"),
            ("FOREWARN_INGEST__OPEN_METRIC_CATALOGUE", "false"),
            ("FOREWARN_TRAIN__INTERVAL", "12h"),
            ("FOREWARN_STORAGE__COMPRESS_AFTER", "off"),
            ("FOREWARN_STORAGE__DEAD_LETTER_RETENTION", "14d"),
        ]),
    )
    .unwrap();
    assert_eq!(config.mqtt.client_id, "1234");
    assert_eq!(config.ingest.shared_group.as_deref(), Some("true"));
    assert_eq!(config.ingest.batch_max_readings, 100);
    assert_eq!(config.mqtt.topic_prefix, "false");
    assert_eq!(config.mqtt.url.as_deref(), Some("mqtt://127.0.0.1:1883"));
    assert_eq!(config.train.cost_false_alarm, 7.0);
    assert_eq!(config.train.negative_sample, 0.5);
    assert!(!config.ingest.open_metric_catalogue);
    assert_eq!(config.train.interval, Some(Duration::from_secs(12 * 3600)));
    assert_eq!(config.storage.compress_after, None);
    assert_eq!(
        config.storage.dead_letter_retention,
        Some(Duration::from_secs(14 * 86_400))
    );
}

#[test]
fn a_malformed_environment_value_names_the_variable_and_the_key() {
    let message = load_error(&[("FOREWARN_INGEST__BATCH_MAX_READINGS", "lots")]);
    assert_eq!(
        message,
        "environment variable FOREWARN_INGEST__BATCH_MAX_READINGS=\"lots\" is not valid for \
             ingest.batch_max_readings: expected an integer"
    );
    let message = load_error(&[("FOREWARN_INGEST__AUTO_REGISTER", "yes")]);
    assert!(
        message.contains("FOREWARN_INGEST__AUTO_REGISTER"),
        "{message}"
    );
    assert!(message.contains("true or false"), "{message}");
    let message = load_error(&[("FOREWARN_TRAIN__COST_MISSED_FAILURE", "many")]);
    assert!(message.contains("expected a number"), "{message}");
    let message = load_error(&[("FOREWARN_TRAIN__FAILURE_MODES", "washer")]);
    assert!(message.contains("config file"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn every_key_without_a_serialized_default_is_a_string() {
    // env_value treats a key missing from the serialized defaults as a string; that is
    // sound only while every such key is an optional string. This lists them: a new
    // optional key of another type must get a default or its own handling.
    let defaults = toml::Table::try_from(Config::default()).unwrap();
    let config = Config::load(
        None,
        env(&[
            ("DATABASE_URL", "1"),
            ("MQTT_URL", "2"),
            ("FOREWARN_INGEST__SHARED_GROUP", "3"),
        ]),
    )
    .unwrap();
    assert_eq!(config.database.url.as_deref(), Some("1"));
    assert_eq!(config.mqtt.url.as_deref(), Some("2"));
    assert_eq!(config.ingest.shared_group.as_deref(), Some("3"));
    let mut missing = Vec::new();
    let loaded = toml::Table::try_from(&config).unwrap();
    for (section, keys) in &loaded {
        for key in keys.as_table().unwrap().keys() {
            if defaults[section].get(key).is_none() {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert_eq!(
        missing,
        ["database.url", "ingest.shared_group", "mqtt.url"],
        "keys with no default; each must be a string"
    );
}

#[test]
fn the_default_client_id_is_unique_per_host_and_stable() {
    assert_eq!(
        default_client_id(Some("ingest-7\n")),
        "forewarn-ingest-ingest-7"
    );
    assert_eq!(
        default_client_id(Some("ingest-7")),
        default_client_id(Some("ingest-7"))
    );
    assert_ne!(
        default_client_id(Some("ingest-7")),
        default_client_id(Some("ingest-8"))
    );
    assert_eq!(
        default_client_id(Some("rack 3/node#1")),
        "forewarn-ingest-rack-3-node-1"
    );
    assert_eq!(default_client_id(None), "forewarn-ingest");
    assert_eq!(default_client_id(Some("")), "forewarn-ingest");
    assert_eq!(default_client_id(Some("\u{2603}")), "forewarn-ingest");
    let long_a = format!("{}-a", "x".repeat(70));
    let long_b = format!("{}-b", "x".repeat(70));
    for long in [&long_a, &long_b] {
        let client_id = default_client_id(Some(long));
        assert_eq!(client_id.len(), MAX_DEFAULT_CLIENT_ID_LEN);
        assert!(crate::contract::is_valid_device_external_id(&client_id));
        // Room for the session suffix of the most sessions allowed.
        assert!(crate::contract::is_valid_device_external_id(&format!(
            "{client_id}-{}",
            MAX_SESSIONS - 1
        )));
    }
    assert_ne!(
        default_client_id(Some(&long_a)),
        default_client_id(Some(&long_b))
    );
    assert_eq!(
        default_client_id(Some(&long_a)),
        default_client_id(Some(&long_a))
    );
}

#[test]
fn the_loaded_default_client_id_names_this_host() {
    let config = Config::load(None, env(&[("HOSTNAME", "replica-2")])).unwrap();
    let expected = default_client_id(proc_host_name().as_deref().or(Some("replica-2")));
    assert_eq!(config.mqtt.client_id, expected);
    assert!(config.mqtt.client_id.starts_with("forewarn-ingest-"));
    assert_eq!(config.mqtt.client_id, MqttConfig::default().client_id);
    let config = Config::load(None, env(&[("FOREWARN_MQTT__CLIENT_ID", "mine")])).unwrap();
    assert_eq!(config.mqtt.client_id, "mine");
}

#[test]
fn redacted_urls_keep_everything_but_the_password() {
    assert_eq!(
        redact_url("mqtt://forewarn-ingest:s3cret@127.0.0.1:1884"),
        "mqtt://forewarn-ingest:***@127.0.0.1:1884"
    );
    assert_eq!(
        redact_url(
            "postgres://postgres:0123abcd@localhost:5999/forewarn?host=%2Fsrv%2Fdata%2Fpostgres"
        ),
        "postgres://postgres:***@localhost:5999/forewarn?host=%2Fsrv%2Fdata%2Fpostgres"
    );
    // sqlx and libpq also take the password as a query parameter.
    let redacted = redact_url("postgres://localhost/db?user=app&password=hunter2&sslmode=require");
    assert_eq!(
        redacted,
        "postgres://localhost/db?user=app&password=***&sslmode=require"
    );
    // Nothing to hide: unchanged.
    assert_eq!(redact_url("mqtt://127.0.0.1:1883"), "mqtt://127.0.0.1:1883");
    assert_eq!(
        redact_url("postgres://postgres@127.0.0.1:5432/postgres"),
        "postgres://postgres@127.0.0.1:5432/postgres"
    );
}

#[test]
fn a_url_that_does_not_parse_still_hides_its_credentials() {
    let redacted = redact_url("postgres://app:pa ss%zz@[bad-host/db");
    assert!(!redacted.contains("pa ss"), "{redacted}");
    assert_eq!(redacted, "postgres://***@[bad-host/db");
    assert_eq!(redact_url("not a url"), "not a url");
}

/// Each value that would panic or misbehave later, with the start of its sentence.
#[test]
fn every_dangerous_value_is_rejected_with_one_sentence() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "FOREWARN_DATABASE__MAX_CONNECTIONS",
            "0",
            "database.max_connections = 0 ",
        ),
        (
            "FOREWARN_DATABASE__ACQUIRE_TIMEOUT",
            "0s",
            "database.acquire_timeout = 0s ",
        ),
        (
            "FOREWARN_MQTT__CLIENT_ID",
            "a b",
            "mqtt.client_id = \"a b\" ",
        ),
        (
            "FOREWARN_MQTT__KEEP_ALIVE",
            "500ms",
            "mqtt.keep_alive = 500ms ",
        ),
        ("FOREWARN_MQTT__KEEP_ALIVE", "0s", "mqtt.keep_alive = 0s "),
        (
            "FOREWARN_MQTT__KEEP_ALIVE",
            "65536s",
            "mqtt.keep_alive = 18h 12m 16s ",
        ),
        (
            "FOREWARN_MQTT__EMBEDDED_LISTEN",
            "0.0.0.0:1884",
            "mqtt.embedded_listen = 0.0.0.0:1884 ",
        ),
        (
            "FOREWARN_MQTT__TOPIC_PREFIX",
            "a/+",
            "mqtt.topic_prefix = \"a/+\" ",
        ),
        (
            "FOREWARN_MQTT__TOPIC_PREFIX",
            "a/",
            "mqtt.topic_prefix = \"a/\" ",
        ),
        (
            "FOREWARN_MQTT__TOPIC_PREFIX",
            "$SYS",
            "mqtt.topic_prefix = \"$SYS\" ",
        ),
        (
            "FOREWARN_INGEST__SHARED_GROUP",
            "a/b",
            "ingest.shared_group = \"a/b\" ",
        ),
        (
            "FOREWARN_INGEST__WRITES_IN_FLIGHT",
            "0",
            "ingest.writes_in_flight = 0 ",
        ),
        (
            "FOREWARN_INGEST__MAX_ABS_VALUE",
            "-1",
            "ingest.max_abs_value = -1 ",
        ),
        (
            "FOREWARN_INGEST__SESSIONS",
            "100000",
            "ingest.sessions = 100000 ",
        ),
        (
            "FOREWARN_INGEST__BATCH_MAX_READINGS",
            "0",
            "ingest.batch_max_readings = 0 ",
        ),
        (
            "FOREWARN_INGEST__MAX_PAYLOAD_BYTES",
            "0",
            "ingest.max_payload_bytes = 0 ",
        ),
        (
            "FOREWARN_INGEST__MAX_PACKET_BYTES",
            "1000",
            "ingest.max_packet_bytes = 1000 ",
        ),
        (
            "FOREWARN_INGEST__MAX_PACKET_BYTES",
            "300000000",
            "ingest.max_packet_bytes = 300000000 ",
        ),
        (
            "FOREWARN_INGEST__MAX_PENDING_MESSAGES",
            "0",
            "ingest.max_pending_messages = 0 ",
        ),
        (
            "FOREWARN_INGEST__MAX_PENDING_MESSAGES",
            "4611686018427387904",
            "ingest.max_pending_messages = 4611686018427387904 ",
        ),
        ("FOREWARN_INGEST__MAX_AGE", "0s", "ingest.max_age = 0s "),
        (
            "FOREWARN_STORAGE__COMPRESS_AFTER",
            "0s",
            "storage.compress_after = 0s ",
        ),
        (
            "FOREWARN_STORAGE__RETENTION",
            "0s",
            "storage.retention = 0s ",
        ),
        (
            "FOREWARN_STORAGE__DEAD_LETTER_RETENTION",
            "0s",
            "storage.dead_letter_retention = 0s ",
        ),
        (
            "FOREWARN_STORAGE__DEAD_LETTER_RETENTION",
            "1000000000years",
            "storage.dead_letter_retention = ",
        ),
        (
            "FOREWARN_STORAGE__RETENTION",
            "1000000000years",
            "storage.retention = ",
        ),
        (
            "FOREWARN_STORAGE__COMPRESS_AFTER",
            "1000000000years",
            "storage.compress_after = ",
        ),
        (
            "FOREWARN_STORAGE__MAINTENANCE_INTERVAL",
            "0s",
            "storage.maintenance_interval = 0s ",
        ),
        (
            "FOREWARN_STORAGE__MAINTENANCE_INTERVAL",
            "400d",
            "storage.maintenance_interval = 1year ",
        ),
        ("FOREWARN_LOG__FILTER", "info,[", "log.filter = \"info,[\" "),
        ("FOREWARN_TRAIN__INTERVAL", "0s", "train.interval = 0s "),
        (
            "FOREWARN_TRAIN__TUNING_WINDOW",
            "0s",
            "train.tuning_window = 0s ",
        ),
        (
            "FOREWARN_TRAIN__TEST_WINDOW",
            "1000000000years",
            "train.test_window = ",
        ),
        (
            "FOREWARN_TRAIN__EXAMPLE_STRIDE",
            "30m",
            "train.example_stride = 30m ",
        ),
        (
            "FOREWARN_TRAIN__EXAMPLE_STRIDE",
            "1000000000years",
            "train.example_stride = ",
        ),
        (
            "FOREWARN_TRAIN__NEGATIVE_SAMPLE",
            "NaN",
            "train.negative_sample = NaN ",
        ),
        (
            "FOREWARN_TRAIN__NEGATIVE_SAMPLE",
            "0",
            "train.negative_sample = 0 ",
        ),
        (
            "FOREWARN_TRAIN__COST_FALSE_ALARM",
            "-1",
            "train.cost_false_alarm = -1 ",
        ),
        (
            "FOREWARN_TRAIN__COST_FALSE_ALARM",
            "0",
            "train.cost_false_alarm = 0 ",
        ),
        (
            "FOREWARN_TRAIN__COST_MISSED_FAILURE",
            "NaN",
            "train.cost_missed_failure = NaN ",
        ),
        (
            "FOREWARN_TRAIN__COST_MISSED_FAILURE",
            "inf",
            "train.cost_missed_failure = inf ",
        ),
        (
            "FOREWARN_TRAIN__DEFAULT_HORIZON",
            "0s",
            "train.default_horizon = 0s ",
        ),
        ("FOREWARN_PREDICT__INTERVAL", "0s", "predict.interval = 0s "),
    ];
    for (name, value, start) in cases {
        let message = load_error(&[(name, value)]);
        assert!(
            message.starts_with(&format!("invalid configuration: {start}")),
            "{name}={value}: {message}"
        );
        assert!(
            message.contains("is not allowed: "),
            "{name}={value}: {message}"
        );
        assert!(!message.contains('\n'), "{name}={value}: {message}");
    }
}

#[test]
fn session_ids_must_fit_the_client_id_limit() {
    let client_id = "c".repeat(63);
    assert!(
        Config::load(
            None,
            env(&[
                ("FOREWARN_MQTT__CLIENT_ID", &client_id),
                ("FOREWARN_INGEST__SESSIONS", "1")
            ])
        )
        .is_ok()
    );
    for sessions in ["2", "0"] {
        // 0 opens AUTO_SESSIONS (2) with an external broker: the suffix is checked too.
        let message = load_error(&[
            ("FOREWARN_MQTT__CLIENT_ID", &client_id),
            ("FOREWARN_INGEST__SESSIONS", sessions),
        ]);
        assert!(message.contains("within 64 characters"), "{message}");
    }
}

#[test]
fn file_values_are_checked_too() {
    let load_file = |text: &str| {
        let dir = std::env::temp_dir().join(format!(
            "forewarn-config-modes-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("forewarn.toml");
        std::fs::write(&path, text).unwrap();
        let result = Config::load(Some(&path), env(&[]));
        std::fs::remove_dir_all(&dir).unwrap();
        result.map_err(|e| e.to_string())
    };
    let mode = |horizon: &str, extra: &str| {
        format!(
            "[[train.failure_modes]]\nkind = \"washer\"\ncomponent = \"drum\"\nhorizon = \"{horizon}\"\n{extra}"
        )
    };
    assert!(load_file(&mode("7d", "")).is_ok());
    let message = load_file(&mode("7d", "cost_false_alarm = nan\n")).unwrap_err();
    assert!(
        message
            .starts_with("invalid configuration: train.failure_modes[0].cost_false_alarm = NaN "),
        "{message}"
    );
    let message = load_file(&mode("10m", "")).unwrap_err();
    assert!(
        message.starts_with("invalid configuration: train.failure_modes[0].horizon = 10m "),
        "{message}"
    );
    let message = load_file(&format!("{}{}", mode("7d", ""), mode("3d", ""))).unwrap_err();
    assert!(
        message.contains("washer/drum is already train.failure_modes[0]"),
        "{message}"
    );
    // Empty strings cannot come from the environment (an empty variable unsets the key).
    for (text, start) in [
        ("[mqtt]\ntopic_prefix = \"\"\n", "mqtt.topic_prefix = \"\" "),
        ("[embedded]\ndata_dir = \"\"\n", "embedded.data_dir = \"\" "),
        ("[train]\nmodel_dir = \"\"\n", "train.model_dir = \"\" "),
    ] {
        let message = load_file(text).unwrap_err();
        assert!(
            message.starts_with(&format!("invalid configuration: {start}")),
            "{message}"
        );
    }
}

#[test]
fn a_malformed_file_value_names_its_key() {
    let message = load_error(&[("FOREWARN_HTTP_ADDR", "localhost:8080")]);
    assert!(message.contains("http.addr"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn the_defaults_are_valid() {
    Config::default().validate().unwrap();
}

#[test]
fn unknown_keys_are_errors() {
    assert!(Config::load(None, env(&[("FOREWARN_INGEST__BATCH_SIZE", "5")])).is_err());
    assert!(Config::load(None, env(&[("FOREWARN_NOPE__X", "5")])).is_err());
    // No `__`: cannot be a key (Kubernetes sets such variables), ignored with a warning.
    let config = Config::load(None, env(&[("FOREWARN_SOMETHING", "5")])).unwrap();
    assert_eq!(config.ignored_env, vec!["FOREWARN_SOMETHING".to_string()]);
    assert!(Config::load(None, env(&[("FOREWARN_INGEST__SESSIONS", "100000")])).is_err());
}

/// The kubelet injects `FOREWARN_SERVICE_HOST`, `FOREWARN_PORT_8080_TCP_ADDR`… for a
/// Service named forewarn: they cannot be keys (no `__`), so they are ignored and listed
/// for a warning. A misspelt section or key (with `__`) is still an error.
#[test]
fn kubernetes_service_variables_are_ignored_but_misspelt_keys_are_not() {
    let kubelet = [
        ("FOREWARN_SERVICE_HOST", "10.96.12.34"),
        ("FOREWARN_SERVICE_PORT", "8080"),
        ("FOREWARN_SERVICE_PORT_HTTP", "8080"),
        ("FOREWARN_PORT", "tcp://10.96.12.34:8080"),
        ("FOREWARN_PORT_8080_TCP", "tcp://10.96.12.34:8080"),
        ("FOREWARN_PORT_8080_TCP_PROTO", "tcp"),
        ("FOREWARN_PORT_8080_TCP_PORT", "8080"),
        ("FOREWARN_PORT_8080_TCP_ADDR", "10.96.12.34"),
        ("FOREWARN_INGEST__SHARED_GROUP", "ingest"),
    ];
    let config = Config::load(None, env(&kubelet)).unwrap();
    assert_eq!(config.ingest.shared_group.as_deref(), Some("ingest"));
    assert_eq!(config.ignored_env.len(), 8);
    assert!(
        config
            .ignored_env
            .contains(&"FOREWARN_PORT_8080_TCP_ADDR".to_string())
    );

    let message = load_error(&[("FOREWARN_INGSET__SHARED_GROUP", "ingest")]);
    assert!(message.contains("FOREWARN_INGSET__"), "{message}");
    let message = load_error(&[("FOREWARN_INGEST__SHARED_GRUOP", "ingest")]);
    assert!(message.contains("shared_gruop"), "{message}");
}

/// Secrets mounted as files: `DATABASE_URL_FILE` and `MQTT_PASSWORD_FILE`.
#[test]
fn secrets_come_from_mounted_files() {
    let dir = std::env::temp_dir().join(format!("forewarn-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url_file = dir.join("database-url");
    std::fs::write(&url_file, "postgres://forewarn:s3cret@db:5432/forewarn\n").unwrap();
    let url_path = url_file.display().to_string();
    let config = Config::load(
        None,
        env(&[
            ("DATABASE_URL_FILE", url_path.as_str()),
            ("MQTT_URL", "mqtt://forewarn@broker:1883"),
            ("MQTT_PASSWORD_FILE", "/run/secrets/mqtt-password"),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.database.url.as_deref(),
        Some("postgres://forewarn:s3cret@db:5432/forewarn")
    );
    assert_eq!(
        config.mqtt.password_file.as_deref(),
        Some(std::path::Path::new("/run/secrets/mqtt-password"))
    );
    let message = load_error(&[
        ("DATABASE_URL_FILE", url_path.as_str()),
        ("DATABASE_URL", "postgres://other"),
    ]);
    assert!(message.contains("both set"), "{message}");
    // An empty DATABASE_URL (Helm values often leave one) unsets nothing the file set, and
    // an empty DATABASE_URL_FILE is unset.
    let config = Config::load(
        None,
        env(&[
            ("DATABASE_URL", ""),
            ("DATABASE_URL_FILE", url_path.as_str()),
        ]),
    )
    .unwrap();
    assert!(config.database.url.is_some());
    let config = Config::load(None, env(&[("DATABASE_URL_FILE", "")])).unwrap();
    assert!(config.database.url.is_none());
    let message = load_error(&[("DATABASE_URL_FILE", "/nonexistent/forewarn-url")]);
    assert!(message.contains("/nonexistent/forewarn-url"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Broker credentials and TLS files are for an external broker: with MQTT_URL unset they
/// would be sent to the embedded broker (which refuses them) or silently ignored. A
/// password needs a user name.
#[test]
fn broker_settings_without_a_broker_url_stop_the_start() {
    for (name, value) in [
        ("FOREWARN_MQTT__USERNAME", "fleet"),
        ("MQTT_PASSWORD_FILE", "/run/secrets/mqtt"),
        ("FOREWARN_MQTT__TLS_CA_FILE", "/etc/forewarn/ca.pem"),
    ] {
        let message = load_error(&[(name, value)]);
        assert!(message.contains("MQTT_URL"), "{name}: {message}");
    }
    let message = load_error(&[
        ("MQTT_URL", "mqtt://broker:1883"),
        ("MQTT_PASSWORD_FILE", "/run/secrets/mqtt"),
    ]);
    assert!(message.contains("needs a user name"), "{message}");
    Config::load(
        None,
        env(&[
            ("MQTT_URL", "mqtt://fleet@broker:1883"),
            ("MQTT_PASSWORD_FILE", "/run/secrets/mqtt"),
        ]),
    )
    .unwrap();
}
