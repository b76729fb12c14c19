//! Any bytes as a telemetry, event and status payload, and as a topic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| forewarn_fuzz::check_json_payload(data));
