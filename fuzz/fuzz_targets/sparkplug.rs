//! Any bytes as a Sparkplug B payload, each metric read as a host application reads it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| forewarn_fuzz::check_sparkplug_payload(data));
