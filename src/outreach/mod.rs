//! Outreach: the worker pool that delivers the `outreach` outbox (DESIGN.md §Outreach). A
//! stage ([`OutreachSettings`]) of `outreach.workers` workers; each, in a loop:
//!
//! 1. claims a batch of due messages for `outreach.lease` (`FOR UPDATE SKIP LOCKED`, so
//!    workers and replicas never share one; a row whose lease ran out — its worker died —
//!    is due again);
//! 2. for each, in parallel up to `outreach.send_concurrency`: holds a non-urgent one back
//!    through the customer's quiet hours ([`deliver::quiet_until`]), picks the channel
//!    (preferred first, then the others the customer has an address on:
//!    [`deliver::channel_order`]), renders it in the customer's language and time zone
//!    ([`render`]) and sends it ([`channels`]);
//! 3. writes every outcome of the batch in one statement, fenced by the claim: sent, retried
//!    with exponential backoff and jitter, moved to the next channel after
//!    `outreach.fallback_after` failures (or at once after a permanent refusal), or failed
//!    with the reason after `outreach.max_attempts` ([`deliver::after_failure`]).
//!
//! Nothing is sent twice to a customer: a message is written `sent` only after its
//! provider accepted it, and a retry after a crash between the two carries the same
//! idempotency key — the `Idempotency-Key` header of HTTP providers, the Message-ID of
//! email — which providers dedupe on. A database outage stops claims and writes; what was
//! claimed is claimed again after the lease, so messages wait and none is lost.

pub mod channels;
pub mod config;
pub mod deliver;
pub mod links;
pub mod render;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use chrono_tz::Tz;

pub use channels::{Channel, Channels, SendError};
pub use config::{OutreachConfig, Secret};
pub use render::{Rendered, Templates};

use crate::observability::Metrics;
use crate::shutdown::Shutdown;
use crate::stage::{Stage, StageDeps};
use crate::store::{Attempt, AttemptOutcome, ClaimedMessage, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OutreachError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Templates(#[from] render::RenderError),
    #[error(transparent)]
    Channels(#[from] channels::ChannelSetupError),
    #[error("no random claim token: {0}")]
    Random(String),
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchReport {
    pub claimed: u64,
    pub sent: u64,
    pub retried: u64,
    pub deferred: u64,
    pub failed: u64,
    /// Outcomes not written: the claim had run out and another worker holds the message.
    pub fenced: u64,
}

impl BatchReport {
    fn add(&mut self, other: BatchReport) {
        self.claimed += other.claimed;
        self.sent += other.sent;
        self.retried += other.retried;
        self.deferred += other.deferred;
        self.failed += other.failed;
        self.fenced += other.fenced;
    }
}

/// The delivery worker: cheap to clone (one per task).
#[derive(Clone)]
pub struct Outreach {
    store: Store,
    config: Arc<OutreachConfig>,
    channels: Channels,
    templates: Arc<Templates>,
    metrics: Option<Arc<Metrics>>,
    /// Signs the links of the messages that offer answers: loaded with the first batch
    /// (its key may live in the database, which may not answer at start).
    links: Arc<tokio::sync::OnceCell<links::LinkSigner>>,
}

impl std::fmt::Debug for Outreach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outreach")
            .field("channels", &self.channels)
            .finish()
    }
}

impl Outreach {
    pub fn new(
        store: Store,
        config: &OutreachConfig,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Outreach, OutreachError> {
        Ok(Outreach {
            store,
            config: Arc::new(config.clone()),
            channels: Channels::new(config)?,
            templates: Arc::new(Templates::load()?),
            metrics,
            links: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// Claims one batch, delivers it and writes the outcomes.
    pub async fn batch(&self) -> Result<BatchReport, OutreachError> {
        let started = Instant::now();
        // The claim's fence: a token no other claim has (a failing random source would give
        // every worker the same one, so it fails the batch instead).
        let claim_token = i64::from_ne_bytes(
            getrandom::u64()
                .map_err(|e| OutreachError::Random(e.to_string()))?
                .to_ne_bytes(),
        );
        self.links
            .get_or_try_init(|| links::LinkSigner::load(&self.store, &self.config))
            .await?;
        let lease_over = Instant::now() + self.config.lease;
        let claimed = self
            .store
            .claim_outreach(
                self.config.batch,
                self.config.lease,
                self.config.max_attempts,
                claim_token,
            )
            .await?;
        if claimed.is_empty() {
            return Ok(BatchReport::default());
        }
        let semaphore = Arc::new(tokio::sync::Semaphore::new(self.config.send_concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for message in claimed {
            let worker = self.clone();
            let semaphore = semaphore.clone();
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                worker.attempt(message, lease_over).await
            });
        }
        // Outcomes are written as they complete, a group at a time: a worker that dies
        // leaves at most one group sent but not written (each re-sent, with its key, after
        // the lease), and the writes stay one statement per group.
        let mut report = BatchReport::default();
        let mut done = Vec::new();
        let mut written = 0;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(attempt) => {
                    self.count(&attempt, &mut report);
                    done.push(attempt);
                }
                // A panicking send leaves its row claimed: it is tried again after the
                // lease.
                Err(error) => tracing::error!(%error, "an outreach send task failed"),
            }
            if done.len() >= self.config.send_concurrency || (tasks.is_empty() && !done.is_empty())
            {
                written += self.store.finish_attempts(&done).await?;
                done.clear();
            }
        }
        report.fenced = report.claimed.saturating_sub(written);
        if let Some(metrics) = &self.metrics {
            metrics.outreach.fenced.inc_by(report.fenced);
            metrics
                .outreach
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if report.fenced > 0 {
            tracing::warn!(
                fenced = report.fenced,
                "outcomes not written: the lease ran out while sending (raise outreach.lease)"
            );
        }
        Ok(report)
    }

    /// Counts one attempt in the report and the metrics.
    fn count(&self, attempt: &Attempt, report: &mut BatchReport) {
        report.claimed += 1;
        let outcome = match &attempt.outcome {
            AttemptOutcome::Sent { .. } => {
                report.sent += 1;
                "sent"
            }
            AttemptOutcome::Retry { rejected, .. } => {
                report.retried += 1;
                if *rejected { "rejected" } else { "retry" }
            }
            AttemptOutcome::Deferred { .. } => {
                report.deferred += 1;
                "deferred"
            }
            AttemptOutcome::Failed { .. } => {
                report.failed += 1;
                "failed"
            }
        };
        if let Some(metrics) = &self.metrics {
            let channel = Channel::parse(&attempt.channel).map_or("none", Channel::as_str);
            metrics
                .outreach
                .attempts
                .get_or_create(&vec![("outcome", outcome), ("channel", channel)])
                .inc();
        }
    }

    /// Batches until nothing is due now (tests and benchmarks).
    pub async fn drain(&self) -> Result<BatchReport, OutreachError> {
        let mut total = BatchReport::default();
        loop {
            let report = self.batch().await?;
            if report.claimed == 0 {
                return Ok(total);
            }
            total.add(report);
        }
    }

    /// One attempt at one message: its outcome, to be written.
    async fn attempt(&self, message: ClaimedMessage, lease_over: Instant) -> Attempt {
        let now = Utc::now();
        let order = deliver::channel_order(&message, |c| self.channels.has(c));
        let done = |channel: &str, outcome| Attempt {
            id: message.id,
            claim_token: message.claim_token,
            channel: channel.to_string(),
            outcome,
        };
        // Waited so long for a free sender that the claim could run out mid-send (and
        // another worker send it too): handed back unsent, due at once.
        let send_limit = self.config.send_timeout + Duration::from_secs(5);
        if Instant::now() + send_limit > lease_over {
            return done(
                &message.channel,
                AttemptOutcome::Deferred {
                    until: now,
                    reason: "handed back: its claim would run out during the send".to_string(),
                },
            );
        }
        // The customer has an address on a channel another process may have set up: not
        // this process's to fail.
        let reachable_elsewhere = Channel::ALL
            .into_iter()
            .filter(|c| *c != Channel::Log)
            .any(|c| deliver::address(&message, c).is_some());
        if order.is_empty() && reachable_elsewhere {
            let error = SendError::Transient(format!(
                "no channel set up in this process reaches this customer (set up here: {:?})",
                self.channels
            ));
            let channel = Channel::parse(&message.channel).unwrap_or(Channel::Email);
            let jitter = f64::from(getrandom::u32().unwrap_or(0)) / f64::from(u32::MAX);
            return done(
                &message.channel,
                deliver::after_failure(
                    &message,
                    channel,
                    &[channel],
                    &error,
                    &self.config,
                    now,
                    jitter,
                ),
            );
        }
        let Some(channel) = deliver::current_channel(&message, &order) else {
            let mut tried = message.channels_tried.clone();
            tried.push(message.channel.clone());
            return done(
                &message.channel,
                AttemptOutcome::Failed {
                    reason: format!(
                        "no channel can reach this customer (preferred {}, email {}, phone {}; \
                     channels set up here: {:?}; given up: {:?})",
                        message.preferred_channel,
                        if message.email.is_some() {
                            "set"
                        } else {
                            "none"
                        },
                        if message.phone.is_some() {
                            "set"
                        } else {
                            "none"
                        },
                        self.channels,
                        message.channels_tried,
                    ),
                    channels_tried: tried,
                },
            );
        };
        let zone: Tz = message.timezone.parse().unwrap_or_else(|_| {
            tracing::warn!(
                customer = message.customer_id,
                timezone = %message.timezone,
                "unknown time zone; using UTC"
            );
            Tz::UTC
        });
        if !message.urgent
            && self.config.quiet_hours
            && let Some(until) = deliver::quiet_until(
                now,
                zone,
                message.quiet_hours_start,
                message.quiet_hours_end,
            )
        {
            return done(
                channel.as_str(),
                AttemptOutcome::Deferred {
                    until,
                    reason: "quiet hours".to_string(),
                },
            );
        }
        let reference = reference(&message);
        // Links answer a visit: only a ticket's messages carry them.
        let links = match (self.links.get(), message.ticket_id) {
            (Some(signer), Some(_)) => {
                signer.links_of(&message.message_type, message.id, message.created_at)
            }
            _ => Vec::new(),
        };
        let rendered = match self.templates.render(&render::Facts {
            message_type: &message.message_type,
            language: &message.language,
            time_zone: zone,
            customer_name: &message.customer_name,
            payload: &message.payload,
            reference: &reference,
            now,
            links: &links,
        }) {
            Ok(rendered) => rendered,
            Err(error) => {
                // The templates are compiled in: the same message fails the same way on
                // every try, so it is failed now, with the reason.
                return done(
                    channel.as_str(),
                    AttemptOutcome::Failed {
                        reason: format!("rendering: {error}"),
                        channels_tried: message.channels_tried.clone(),
                    },
                );
            }
        };
        let to = deliver::address(&message, channel).unwrap_or_default();
        let outgoing = channels::Outgoing {
            idempotency_key: &message.idempotency_key,
            channel,
            to,
            customer: message
                .customer_external_id
                .as_deref()
                .unwrap_or(&message.customer_name),
            message_type: &message.message_type,
            ticket_id: message.ticket_id,
            incident_id: message.incident_id,
            reference: &reference,
            urgent: message.urgent,
            rendered: &rendered,
        };
        let limit = self.config.send_timeout + Duration::from_secs(5);
        let sent = match tokio::time::timeout(limit, self.channels.send(&outgoing)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Transient(format!(
                "no answer within {}",
                humantime::format_duration(limit)
            ))),
        };
        match sent {
            Ok(response) => done(
                channel.as_str(),
                AttemptOutcome::Sent {
                    response,
                    subject: rendered.subject,
                    body: rendered.text,
                },
            ),
            Err(error) => {
                tracing::debug!(key = %message.idempotency_key, channel = channel.as_str(), %error, "send failed");
                let jitter = f64::from(getrandom::u32().unwrap_or(0)) / f64::from(u32::MAX);
                done(
                    channel.as_str(),
                    deliver::after_failure(
                        &message,
                        channel,
                        &order,
                        &error,
                        &self.config,
                        now,
                        jitter,
                    ),
                )
            }
        }
    }
}

/// The reference a customer keeps in a reply, threading it onto its ticket (or incident).
pub fn reference(message: &ClaimedMessage) -> String {
    match (message.ticket_id, message.incident_id) {
        (Some(ticket), _) => format!("FW-{ticket}"),
        (None, Some(incident)) => format!("FW-I{incident}"),
        (None, None) => format!("FW-M{}", message.id),
    }
}

/// The outreach stage of `serve` and `forewarn outreach`.
#[derive(Debug, Clone)]
pub struct OutreachSettings {
    pub config: OutreachConfig,
    pub interval: Duration,
}

impl Stage for OutreachSettings {
    const NAME: &'static str = "outreach";
    type Error = OutreachError;

    fn run(
        self,
        deps: StageDeps,
        shutdown: Shutdown,
    ) -> impl std::future::Future<Output = Result<(), OutreachError>> + Send + 'static {
        run(self, deps, shutdown)
    }
}

async fn run(
    settings: OutreachSettings,
    deps: StageDeps,
    shutdown: Shutdown,
) -> Result<(), OutreachError> {
    let outreach = Outreach::new(deps.store, &settings.config, Some(deps.metrics))?;
    if !Channel::ALL.into_iter().any(|c| outreach.channels.has(c)) {
        // Claiming would fail every message for want of a channel: they wait instead.
        tracing::warn!(
            "outreach: no channel is set up (outreach.smtp_url, sms_url, push_url, webhook_url, \
             log_channel); customers' messages wait in the outbox"
        );
        let mut shutdown = shutdown;
        shutdown.wait().await;
        return Ok(());
    }
    let loopback = url::Url::parse(&settings.config.public_url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| matches!(h, "127.0.0.1" | "localhost" | "[::1]"))
        })
        .unwrap_or(false);
    let reaches_people = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Webhook,
    ]
    .into_iter()
    .any(|c| outreach.channels.has(c));
    if loopback && reaches_people {
        tracing::warn!(
            public_url = %settings.config.public_url,
            "outreach.public_url is a loopback address: the links in customers' messages will \
             not reach this server from their phones; set it to where customers reach it"
        );
    }
    tracing::info!(
        workers = settings.config.workers,
        channels = ?outreach.channels,
        "outreach started"
    );
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..settings.config.workers {
        let outreach = outreach.clone();
        let shutdown = shutdown.clone();
        let interval = settings.interval;
        workers.spawn(async move { work(worker, outreach, interval, shutdown).await });
    }
    while workers.join_next().await.is_some() {}
    Ok(())
}

/// One worker: batches back to back while there is work, else a wait of `interval`; a
/// failed batch (the database gone) is logged and tried again after the wait.
async fn work(worker: usize, outreach: Outreach, interval: Duration, mut shutdown: Shutdown) {
    let mut failing = false;
    while !shutdown.is_triggered() {
        let idle = match outreach.batch().await {
            Ok(report) => {
                if failing {
                    tracing::info!(worker, "outreach batches succeed again");
                    failing = false;
                }
                if report.claimed > 0 {
                    tracing::debug!(worker, ?report, "outreach batch");
                }
                report.claimed == 0
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(worker, %error, "outreach batch failed; retrying");
                    failing = true;
                }
                true
            }
        };
        if idle {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
