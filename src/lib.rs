//! forewarn: predictive field service. Devices stream telemetry over MQTT; forewarn stores
//! it in PostgreSQL/TimescaleDB and (in later stages) predicts failures, books technicians
//! and contacts customers first. See `docs/ARCHITECTURE.md` for the map.

/// HTTP: health, readiness, metrics (and later the `/api/v1` routes).
pub mod api;
/// Composition of stages, and resolution of the database and broker.
pub mod app;
/// Model artifacts and cards on disk: written by training, read by live scoring.
pub mod artifact;
/// `forewarn bench …`: committed benchmarks.
pub mod bench;
/// Configuration from file and environment.
pub mod config;
/// The MQTT contract: topics, payloads, validation rules. Pure.
pub mod contract;
/// `forewarn demo`'s simulated fleet, and the wait until ingest has taken in what it published.
pub mod demo;
/// Dispatch: the ticket policy so far (pure); the stage comes with its issue.
pub mod dispatch;
/// Embedded defaults: in-process broker, private PostgreSQL cluster, private Mosquitto.
pub mod embedded;
/// Features: the one code path from history to numbers, for training and scoring. Pure.
pub mod features;
/// What features and labels are computed from, as loaded from the store (one path for training and scoring).
pub mod history;
/// `forewarn import`: history from CSV/Parquet through a column mapping (C-MAPSS preset).
pub mod import;
/// MQTT ingest: parse, validate, batch, write, acknowledge after commit.
pub mod ingest;
/// Synthetic telemetry publisher (benchmarks, demo).
pub mod loadgen;
/// The maintenance stage: rollup refresh and retention on plain PostgreSQL, dead-letter retention.
pub mod maintenance;
/// Candidate models, calibration, thresholds, metrics. Pure.
pub mod model;
/// Logging and Prometheus metrics.
pub mod observability;
/// The `outreach` stage: deliver the outbox to customers, in their language, on their
/// channel.
pub mod outreach;
/// The live `predict` stage: score devices with new data, write predictions.
pub mod predict;
/// Shutdown signalling for stages.
pub mod shutdown;
/// The shape every long-running stage has: settings, `run(deps, shutdown)`, own errors, the periodic loop.
pub mod stage;
/// All SQL: pool, migrations, writes and queries.
pub mod store;
/// `forewarn train` / `evaluate`: examples, labels, time split, artifacts, model cards.
pub mod training;
