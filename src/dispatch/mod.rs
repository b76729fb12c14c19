//! Dispatch: where a risk becomes a job with a person, a time and a place (DESIGN.md
//! §Dispatch). A stage ([`DispatchSettings`]) whose every pass ([`Dispatcher::pass`]), in
//! event time:
//!
//! 1. applies new predictions to their (device, mode)'s ticket policy ([`policy`]:
//!    hysteresis, repeats, escalation, cancellation, cool-down), the visit due inside the
//!    predicted window ([`window`]) (`signals.rs`);
//! 2. opens reactive tickets for critical device events and for devices gone silent
//!    (`reactive.rs`; a customer's call is [`customer_call`]);
//! 3. triages new tickets once they have settled: a surge — many devices of one area or
//!    model raising the same signal within minutes ([`surge`], DBSCAN over haversine
//!    kilometres) — becomes one incident holding its tickets, with one notice per
//!    customer; the rest are released (`triage.rs`);
//! 4. books released tickets: the technician and slot [`plan`] chooses, the database's
//!    exclusion constraint the last word (`booking.rs`);
//! 5. tells customers of their visit through the outbox, in the transaction that decides
//!    it: at once when urgent, soon or rescheduled, else once the booking's hold is over;
//!    until then each pass moves held visits to cheaper places as later tickets are
//!    booked around them (`proposals.rs`, [`plan::improve`]).
//!
//! Customers answer through signed links at any time ([`answers`]): confirm, take another
//! time the planner offers, or decline, through the same rules and constraints; a
//! dispatcher books by hand through them too ([`manual`]).
//!
//! Every write goes through `store` with its `ticket_events` row; replicas share the work
//! through row locks (`FOR UPDATE SKIP LOCKED`), an advisory lock for triage and the
//! constraints, so two replicas give the result of one.

pub mod answers;
pub mod config;
pub mod manual;
pub mod plan;
pub mod policy;
pub mod surge;
pub mod window;

pub(crate) mod booking;
mod proposals;
mod reactive;
mod signals;
mod triage;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::DispatchConfig;
pub use reactive::{CustomerCall, customer_call};

use crate::contract::EpochMicros;
use crate::observability::Metrics;
use crate::shutdown::Shutdown;
use crate::stage::{FirstTick, Periodic, Stage, StageDeps};
use crate::store::{ModeFacts, Store, StoreError};

/// The dispatch stage's failures.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the planning task failed: {0}")]
    Planning(String),
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassReport {
    /// Scores read (replays included).
    pub signals: u64,
    pub replays: u64,
    pub opened: u64,
    pub merged: u64,
    pub escalated: u64,
    pub cancelled: u64,
    pub held_by_cooldown: u64,
    /// Critical events and silent devices that opened or merged a ticket.
    pub critical_events: u64,
    pub silent_devices: u64,
    pub incidents: u64,
    /// Tickets held in an incident.
    pub held: u64,
    pub released: u64,
    pub booked: u64,
    /// Slots another replica took first (the next candidate was tried).
    pub slot_taken: u64,
    /// Tickets no technician could take (planned again later).
    pub unbookable: u64,
    /// Held bookings whose customers were told (their hold over).
    pub proposed: u64,
    /// Held bookings moved to a cheaper place before anyone was told.
    pub improved: u64,
    /// Planned moves refused at write time (the booking or slot changed meanwhile).
    pub improve_refused: u64,
    pub messages: u64,
}

impl PassReport {
    fn count(&self, metrics: &Metrics) {
        let actions = [
            ("signal", self.signals),
            ("opened", self.opened),
            ("merged", self.merged),
            ("escalated", self.escalated),
            ("cancelled", self.cancelled),
            ("critical_event", self.critical_events),
            ("silent_device", self.silent_devices),
            ("incident", self.incidents),
            ("held", self.held),
            ("released", self.released),
            ("booked", self.booked),
            ("slot_taken", self.slot_taken),
            ("unbookable", self.unbookable),
            ("proposed", self.proposed),
            ("improved", self.improved),
            ("improve_refused", self.improve_refused),
            ("message", self.messages),
        ];
        for (action, n) in actions {
            if n > 0 {
                metrics
                    .dispatch
                    .actions
                    .get_or_create(&vec![("action", action.to_string())])
                    .inc_by(n);
            }
        }
    }

    /// Nothing happened.
    pub fn is_idle(&self) -> bool {
        *self == PassReport::default()
    }
}

/// The trained modes' facts, by (version, mode), and the active version of each mode.
#[derive(Debug, Default)]
pub(crate) struct ModeBook {
    by_version: HashMap<(String, String), ModeFacts>,
    active: HashMap<String, (String, String)>,
}

impl ModeBook {
    fn new(rows: Vec<ModeFacts>) -> ModeBook {
        let mut book = ModeBook::default();
        for row in rows {
            let key = (row.version.clone(), row.failure_mode.clone());
            if row.active {
                book.active.insert(row.failure_mode.clone(), key.clone());
            }
            book.by_version.insert(key, row);
        }
        book
    }

    /// The facts of the model version that scored.
    pub(crate) fn facts(&self, version: &str, mode: &str) -> Option<&ModeFacts> {
        self.by_version
            .get(&(version.to_string(), mode.to_string()))
    }

    /// The facts of the mode's active model.
    pub(crate) fn active(&self, mode: &str) -> Option<&ModeFacts> {
        self.active
            .get(mode)
            .and_then(|key| self.by_version.get(key))
    }

    /// The components trained models know for a kind.
    pub(crate) fn components_of(&self, kind: &str) -> Vec<String> {
        let mut components: Vec<String> = self
            .by_version
            .keys()
            .filter_map(|(_, mode)| mode.split_once('/'))
            .filter(|(k, _)| *k == kind)
            .map(|(_, c)| c.to_string())
            .collect();
        components.sort();
        components.dedup();
        components
    }
}

/// One dispatcher: what a replica runs every pass.
pub struct Dispatcher {
    store: Store,
    config: DispatchConfig,
    actor: String,
    modes: ModeBook,
}

impl Dispatcher {
    pub fn new(store: Store, config: DispatchConfig) -> Dispatcher {
        Dispatcher {
            store,
            config,
            actor: "dispatch".to_string(),
            modes: ModeBook::default(),
        }
    }

    /// One pass over everything new, as of `now` (event time; `None`: the fleet's clock,
    /// the newest time any device reported).
    pub async fn pass(&mut self, now: Option<EpochMicros>) -> Result<PassReport, DispatchError> {
        let mut report = PassReport::default();
        self.modes = ModeBook::new(self.store.mode_facts().await?);
        self.apply_predictions(&mut report).await?;
        let clock = match now {
            Some(now) => Some(now),
            None => self.store.fleet_clock().await?,
        };
        self.critical_events(clock, &mut report).await?;
        let Some(clock) = clock else {
            // No device has reported: nothing is silent, nothing to book.
            return Ok(report);
        };
        self.silent_devices(clock, &mut report).await?;
        self.triage(clock, &mut report).await?;
        self.book(clock, &mut report).await?;
        let view = self.plan_view(clock).await?;
        self.propose(clock, &view.names, &mut report).await?;
        self.improve(clock, view, &mut report).await?;
        Ok(report)
    }
}

/// The stage: a pass every `dispatch.interval`.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub config: DispatchConfig,
    pub interval: Duration,
}

impl Stage for DispatchSettings {
    const NAME: &'static str = "dispatch";
    type Error = DispatchError;

    fn run(
        self,
        deps: StageDeps,
        shutdown: Shutdown,
    ) -> impl std::future::Future<Output = Result<(), DispatchError>> + Send + 'static {
        run(self, deps, shutdown)
    }
}

/// The stage's life: a pass every tick, a failed pass logged and retried on the next.
async fn run(
    settings: DispatchSettings,
    deps: StageDeps,
    shutdown: Shutdown,
) -> Result<(), DispatchError> {
    let metrics: Arc<Metrics> = deps.metrics.clone();
    let mut dispatcher = Dispatcher::new(deps.store, settings.config);
    let mut ticks = Periodic::new(settings.interval, FirstTick::Immediately, shutdown);
    while ticks.next().await {
        let started = Instant::now();
        match dispatcher.pass(None).await {
            Ok(report) => {
                report.count(&metrics);
                metrics
                    .dispatch
                    .passes
                    .get_or_create(&vec![("outcome", "ok")])
                    .inc();
                if !report.is_idle() {
                    tracing::info!(
                        ?report,
                        seconds = started.elapsed().as_secs_f64(),
                        "dispatch pass"
                    );
                }
            }
            Err(error) => {
                metrics
                    .dispatch
                    .passes
                    .get_or_create(&vec![("outcome", "failed")])
                    .inc();
                tracing::warn!(%error, "dispatch pass failed; retried on the next tick");
            }
        }
        metrics
            .dispatch
            .pass_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(())
}
