//! Triage of new tickets. A ticket waits `dispatch.settle` after it opened; meanwhile a
//! surge — at least `surge.min_devices` devices of one area (DBSCAN over haversine
//! kilometres) or one model raising the same signal within `surge.window` — becomes one
//! incident that holds its tickets (no visit booked until a dispatcher triages it) and
//! tells each affected customer once. A later member of an open incident's area or model
//! joins it. Tickets in no surge are released once settled: booked and told.
//!
//! One triage at a time across replicas (an advisory lock), so a surge is never split
//! between two replicas each seeing too few of its devices.

use std::collections::BTreeMap;

use super::plan::{Point, haversine_km};
use super::surge::{Member, Scope, find_surges};
use super::window::Criticality;
use super::{DispatchError, Dispatcher, PassReport};
use crate::contract::{EpochMicros, duration_micros};
use crate::store::{Message, MessageType, NewIncident, OpenIncident, StoreTx, TriageTicket};

/// Tickets read per triage.
const TRIAGE_LIMIT: i64 = 50_000;

/// The signal a ticket stands for in a surge: its failure mode, or `silence` for every
/// kind (a power cut silences fridges and washers alike).
pub(super) fn surge_key(failure_mode: &str) -> &str {
    match failure_mode.split_once('/') {
        Some((_, "silence")) => "silence",
        _ => failure_mode,
    }
}

fn point(position: Option<(f64, f64)>) -> Option<Point> {
    position.map(|(latitude, longitude)| Point {
        latitude,
        longitude,
    })
}

impl Dispatcher {
    pub(super) async fn triage(
        &mut self,
        clock: EpochMicros,
        report: &mut PassReport,
    ) -> Result<(), DispatchError> {
        let mut tx = self.store.begin().await?;
        if !tx.try_triage_lock().await? {
            // Another replica triages now; the next pass sees what it left.
            return Ok(());
        }
        let tickets = tx.tickets_to_triage(TRIAGE_LIMIT).await?;
        if tickets.is_empty() {
            return Ok(());
        }
        let incidents = tx.open_incidents().await?;
        let mut groups: BTreeMap<String, Vec<TriageTicket>> = BTreeMap::new();
        for ticket in tickets {
            groups
                .entry(surge_key(&ticket.failure_mode).to_string())
                .or_default()
                .push(ticket);
        }
        let settle = duration_micros(self.config.settle);
        let window = duration_micros(self.config.surge.window);
        let mut release = Vec::new();
        for (key, members) in groups {
            // Late members of an incident still open join it.
            let mut rest = Vec::new();
            let mut joining: BTreeMap<i64, Vec<&TriageTicket>> = BTreeMap::new();
            for ticket in &members {
                match incidents
                    .iter()
                    .find(|i| i.failure_mode == key && self.joins(i, ticket, window))
                {
                    Some(incident) => joining.entry(incident.id).or_default().push(ticket),
                    None => rest.push(ticket),
                }
            }
            for (incident_id, joined) in joining {
                self.hold(&mut tx, incident_id, &joined, clock, report)
                    .await?;
            }
            let candidates: Vec<Member> = rest
                .iter()
                .map(|t| Member {
                    device_id: t.device_id,
                    model: t.model.clone(),
                    position: point(t.position),
                    at: t.first_seen_at,
                })
                .collect();
            let mut in_surge = std::collections::HashSet::new();
            // DBSCAN over thousands of devices is seconds of CPU: off the async workers.
            let settings = self.config.surge.clone();
            let surges = tokio::task::spawn_blocking(move || find_surges(&candidates, &settings))
                .await
                .map_err(|e| DispatchError::Planning(e.to_string()))?;
            for surge in surges {
                let (center, radius_km, model) = match &surge.scope {
                    Scope::Area { center, radius_km } => (
                        Some((center.latitude, center.longitude)),
                        Some(*radius_km),
                        None,
                    ),
                    Scope::Model(model) => (None, None, Some(model.clone())),
                };
                let incident_id = tx
                    .create_incident(&NewIncident {
                        failure_mode: key.clone(),
                        model,
                        center,
                        radius_km,
                        first_at: surge.first_at,
                        last_at: surge.last_at,
                    })
                    .await?;
                report.incidents += 1;
                tracing::warn!(incident_id, signal = %key, devices = surge.members.len(), scope = ?surge.scope, "surge: one incident instead of a ticket per device");
                let held: Vec<&TriageTicket> = rest
                    .iter()
                    .copied()
                    .filter(|t| surge.members.binary_search(&t.device_id).is_ok())
                    .collect();
                in_surge.extend(held.iter().map(|t| t.id));
                self.hold(&mut tx, incident_id, &held, clock, report)
                    .await?;
            }
            release.extend(
                rest.iter()
                    .filter(|t| !in_surge.contains(&t.id))
                    .filter(|t| t.opened_at.saturating_add(settle) <= clock)
                    .map(|t| t.id),
            );
        }
        report.released += tx.release_tickets(&release, clock).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether a ticket belongs to an open incident: the same model (a model incident)
    /// or within its area (an area incident, with DBSCAN's reach beyond its radius), and
    /// not long after its last member.
    fn joins(&self, incident: &OpenIncident, ticket: &TriageTicket, window: i64) -> bool {
        if incident
            .last_at
            .is_some_and(|last| ticket.first_seen_at > last.saturating_add(window))
        {
            return false;
        }
        match (&incident.model, incident.center, point(ticket.position)) {
            (Some(model), _, _) => ticket.model.as_deref() == Some(model.as_str()),
            (None, Some((latitude, longitude)), Some(position)) => {
                let reach = incident.radius_km.unwrap_or(0.0) + self.config.surge.radius_km;
                haversine_km(
                    Point {
                        latitude,
                        longitude,
                    },
                    position,
                ) <= reach
            }
            _ => false,
        }
    }

    /// Holds tickets in an incident and tells each of their customers once.
    async fn hold(
        &self,
        tx: &mut StoreTx,
        incident_id: i64,
        tickets: &[&TriageTicket],
        clock: EpochMicros,
        report: &mut PassReport,
    ) -> Result<(), DispatchError> {
        let ids: Vec<i64> = tickets.iter().map(|t| t.id).collect();
        let customers = tx
            .link_to_incident(incident_id, &ids, clock, &self.actor)
            .await?;
        report.held += ids.len() as u64;
        let urgent = tickets
            .iter()
            .any(|t| self.config.criticality_of(&t.device_kind) == Criticality::High);
        for customer_id in customers {
            let queued = tx
                .queue_incident_message(
                    customer_id,
                    incident_id,
                    &Message {
                        idempotency_key: format!("incident:{incident_id}:customer:{customer_id}"),
                        message_type: MessageType::IncidentNotice,
                        urgent,
                        payload: serde_json::json!({}),
                        at: clock,
                    },
                )
                .await?;
            report.messages += u64::from(queued);
        }
        Ok(())
    }
}
