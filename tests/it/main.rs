//! The integration suite: one binary, real PostgreSQL and a real MQTT broker.

mod api;
mod api_routes;
mod cmapss;
mod config;
mod dispatch;
mod embedded;
mod faults;
mod faults_restarts;
mod hostile;
mod import;
mod ingest;
mod ingest_hardening;
mod links;
mod outreach;
mod predict;
mod sparkplug;
mod storage;
mod support;
mod tidy;
mod tls;
