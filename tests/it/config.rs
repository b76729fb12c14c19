//! Bad configuration through the real binary: one sentence on stderr and a failed exit,
//! never a panic in the library call the value would have reached.

/// Values that used to panic at runtime: rumqttc's `set_keep_alive` asserts on a sub-second
/// keep-alive, `tokio::time::interval` on a zero period (maintenance, predict, retraining).
#[test]
fn values_that_used_to_panic_stop_the_binary_with_one_sentence() {
    let cases = [
        (
            "FOREWARN_MQTT__KEEP_ALIVE",
            "500ms",
            "mqtt.keep_alive = 500ms",
        ),
        (
            "FOREWARN_STORAGE__MAINTENANCE_INTERVAL",
            "0s",
            "storage.maintenance_interval = 0s",
        ),
        ("FOREWARN_PREDICT__INTERVAL", "0s", "predict.interval = 0s"),
        ("FOREWARN_TRAIN__INTERVAL", "0s", "train.interval = 0s"),
        (
            "FOREWARN_INGEST__MAX_PENDING_MESSAGES",
            "0",
            "ingest.max_pending_messages = 0",
        ),
        (
            "FOREWARN_INGEST__BATCH_MAX_READINGS",
            "many",
            "FOREWARN_INGEST__BATCH_MAX_READINGS=\"many\"",
        ),
    ];
    for (name, value, sentence) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_forewarn"))
            .arg("serve")
            .env("FOREWARN_HTTP_ADDR", "127.0.0.1:0")
            .env(name, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}={value}: {stderr}");
        assert!(stderr.contains(sentence), "{name}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}={value}: {stderr}");
    }
}
