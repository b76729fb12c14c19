//! The HTTP surface: one router per module, merged here. `ops` answers probes and
//! scrapers (`/healthz`, `/readyz`, `/metrics`); the `/api/v1` modules (`devices`,
//! `tickets`, `technicians`, `people` — customers, replies, incidents, messages —,
//! `insight` — models, dead letters, KPIs —, `stream`) answer JSON, described by the
//! OpenAPI document made from their annotations (`openapi`, at `/api/openapi.json`); input
//! is read only through `params` (every rejection a 422 naming the field), and every error they give is one
//! `application/problem+json` answer ([`problem::HttpError`]): rejected input 422 naming
//! the field, not found 404, a transient store failure 503, anything else 500 without
//! internals. A path no router knows is a problem+json 404 too. Every `/api/v1` route but
//! the providers' signed inbound webhooks answers only to an API key ([`auth`]: 401 without
//! one, 403 for a role the route does not serve, 429 past the key's rate).
//! `links` serves the pages of customers' signed links (`/l/{token}`), outside `/api/v1`:
//! HTML for people, not JSON; `console` the dispatcher console (`/`, `/console/…`), its
//! files embedded in the binary.
//! The server is a stage ([`HttpServer`] implements [`Stage`]): every process runs it.

pub mod auth;
pub mod config;
pub mod console;
mod devices;
pub mod inbound;
mod insight;
pub mod known_keys;
pub mod links;
mod openapi;
mod ops;
pub mod params;
mod people;
pub mod probe;
pub mod problem;
pub mod stream;
mod technicians;
mod tickets;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use chrono::{DateTime, Utc};

use crate::contract::EpochMicros;
use crate::dispatch::{DispatchConfig, Dispatcher};
use crate::observability::Metrics;
use crate::outreach::{OutreachConfig, Secret};
use crate::shutdown::Shutdown;
use crate::stage::{Stage, StageDeps};
use crate::store::{HealthCheck, Store};

pub use problem::{HttpError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("link pages cannot start: {0}")]
    Links(String),
}

#[derive(Clone)]
pub struct ApiState {
    /// `/readyz`'s own small pool ([`Store::health_check`](crate::store::Store::health_check)),
    /// never the store's, so probes cannot starve ingest of connections.
    pub health: HealthCheck,
    pub metrics: Arc<Metrics>,
    /// What the `/api/v1` modules read and write through.
    pub store: Store,
    /// The dispatch rules a dispatcher's booking by hand goes through.
    pub dispatcher: Arc<Dispatcher>,
    /// The key inbound-reply webhooks are signed with (`outreach.inbound_secret`); `None`:
    /// replies are refused.
    pub inbound_secret: Option<Secret>,
    /// The pages of customers' signed links (`/l/{token}`); `None`: not served.
    pub links: Option<Arc<links::LinkPages>>,
    /// Each API key's rate limit.
    pub limits: Arc<auth::Limits>,
    /// Live changes for `/api/v1/stream` (fed by [`stream::pump`] once a stream opens).
    pub changes: stream::Changes,
    /// The keys this process has checked (while [`known_keys::listen`] runs).
    pub known_keys: Arc<known_keys::KnownKeys>,
}

impl ApiState {
    pub fn new(deps: StageDeps) -> ApiState {
        ApiState {
            health: deps.store.health_check(),
            metrics: deps.metrics,
            dispatcher: Arc::new(Dispatcher::new(
                deps.store.clone(),
                DispatchConfig::default(),
            )),
            store: deps.store,
            inbound_secret: None,
            links: None,
            limits: auth::Limits::new(100, 200),
            changes: stream::Changes::default(),
            known_keys: Arc::default(),
        }
    }
}

/// The event time of an API action (DESIGN.md §Time): the fleet's clock, the wall clock
/// before any device reported.
pub(crate) async fn clock(state: &ApiState) -> Result<EpochMicros, HttpError> {
    Ok(state
        .store
        .fleet_clock()
        .await?
        .unwrap_or_else(|| Utc::now().timestamp_micros()))
}

/// [`clock`] as a time.
pub(crate) async fn clock_time(state: &ApiState) -> Result<DateTime<Utc>, HttpError> {
    let micros = clock(state).await?;
    Ok(DateTime::from_timestamp_micros(micros).unwrap_or_else(Utc::now))
}

/// A read's time range (`params::range`), asking the database for the fleet's clock only
/// when the range leaves an end to it.
pub(crate) async fn fleet_range(
    state: &ApiState,
    from: Option<&str>,
    to: Option<&str>,
    default_span: chrono::Duration,
    max_span: chrono::Duration,
) -> Result<(DateTime<Utc>, DateTime<Utc>), HttpError> {
    let now = match (from, to) {
        (Some(from), Some(to)) if !from.is_empty() && !to.is_empty() => Utc::now(),
        _ => clock_time(state).await?,
    };
    params::range(from, to, now, default_span, max_span)
}

/// Every route: `ops` at the root, the keyed `/api/v1` modules (with the OpenAPI document
/// made from their annotations at `/api/openapi.json`), the signed inbound webhooks, and
/// customers' link pages.
pub fn router(state: ApiState) -> Router {
    let (keyed, document) = utoipa_axum::router::OpenApiRouter::with_openapi(openapi::base())
        .nest(
            "/api/v1",
            utoipa_axum::router::OpenApiRouter::new()
                .merge(devices::router())
                .merge(tickets::router())
                .merge(technicians::router())
                .merge(people::router())
                .merge(insight::router())
                .merge(stream::router()),
        )
        .split_for_parts();
    // Every keyed route answers only to an API key; the providers' inbound webhooks are
    // signed instead.
    let keyed = keyed.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ));
    Router::new()
        .merge(ops::router())
        .merge(links::router())
        .merge(console::router())
        .merge(openapi::router(document))
        .merge(keyed)
        .nest("/api/v1", inbound::router())
        .method_not_allowed_fallback(problem::method_not_allowed)
        .fallback(problem::no_such_route)
        .with_state(state)
}

/// A bound listener, so callers (tests) learn the port before serving.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    inbound_secret: Option<Secret>,
    links: Option<(OutreachConfig, DispatchConfig)>,
    /// The dispatch rules of bookings by hand.
    dispatch: DispatchConfig,
    /// Requests a second and burst per API key.
    rate: (u32, u32),
}

impl HttpServer {
    pub async fn bind(addr: SocketAddr) -> Result<HttpServer, ApiError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ApiError::Bind { addr, source })?;
        Ok(HttpServer {
            listener,
            inbound_secret: None,
            links: None,
            dispatch: DispatchConfig::default(),
            rate: (100, 200),
        })
    }

    /// Accepts inbound replies signed with `secret` (`outreach.inbound_secret`).
    pub fn with_inbound_secret(mut self, secret: Option<Secret>) -> HttpServer {
        self.inbound_secret = secret;
        self
    }

    /// Serves customers' signed links (`/l/{token}`): signed and answered by the rules of
    /// these sections.
    pub fn with_links(mut self, outreach: OutreachConfig, dispatch: DispatchConfig) -> HttpServer {
        self.dispatch = dispatch.clone();
        self.links = Some((outreach, dispatch));
        self
    }

    /// Each API key's rate limit (`http.rate_limit`, `http.rate_burst`).
    pub fn with_rate_limit(mut self, per_second: u32, burst: u32) -> HttpServer {
        self.rate = (per_second, burst);
        self
    }

    /// The state its routes share, over `deps`.
    pub fn state(&self, deps: StageDeps) -> Result<ApiState, ApiError> {
        let links = match &self.links {
            Some((outreach, dispatch)) => Some(Arc::new(
                links::LinkPages::new(deps.store.clone(), outreach.clone(), dispatch.clone())
                    .map_err(|e| ApiError::Links(e.to_string()))?,
            )),
            None => None,
        };
        Ok(ApiState {
            inbound_secret: self.inbound_secret.clone(),
            links,
            limits: auth::Limits::new(self.rate.0, self.rate.1),
            dispatcher: Arc::new(Dispatcher::new(deps.store.clone(), self.dispatch.clone())),
            ..ApiState::new(deps)
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub async fn serve(self, state: ApiState, mut shutdown: Shutdown) -> Result<(), ApiError> {
        tracing::info!(addr = %self.local_addr(), "http listening");
        // Live changes for the streams, once one opens, until shutdown ends them (a server
        // waits for its open connections to close, so streams must end first).
        state.changes.arm(state.store.clone(), shutdown.clone());
        // Keys are remembered while revocations are heard.
        tokio::spawn(known_keys::listen(
            state.store.clone(),
            state.known_keys.clone(),
            shutdown.clone(),
        ));
        axum::serve(self.listener, router(state))
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
            .map_err(ApiError::Serve)
    }
}

impl Stage for HttpServer {
    const NAME: &'static str = "http";
    type Error = ApiError;

    async fn run(self, deps: StageDeps, shutdown: Shutdown) -> Result<(), ApiError> {
        let state = self.state(deps)?;
        self.serve(state, shutdown).await
    }
}
