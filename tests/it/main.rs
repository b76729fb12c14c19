//! The integration suite: one binary, real PostgreSQL and a real MQTT broker.

mod ingest;
mod predict;
mod storage;
mod support;
