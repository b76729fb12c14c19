//! `GET /api/v1/stream`: server-sent events of ticket, booking and prediction changes, for
//! the console. Once a stream opens, one task per process listens to the database's change channel
//! ([`pump`]) and fans each change out to every open stream; a stream that falls behind, or
//! a lost listening connection, gets a `resync` event (read again what you show), never a
//! silent gap. Streams end when the server shuts down.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::auth::{Caller, Role};
use super::problem::{HttpError, Refusals};
use crate::shutdown::Shutdown;
use crate::store::Store;

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(stream))
}

/// Changes a slow stream may fall behind by before it is told to resync.
const BACKLOG: usize = 1_024;

/// One change, as sent: the SSE event name and its JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    event: String,
    data: String,
}

/// The fan-out of changes to open streams. Its listening connection is opened when the
/// first stream opens (a process nobody watches holds none).
#[derive(Clone)]
pub struct Changes {
    sender: broadcast::Sender<Change>,
    /// What the pump needs, until the first stream starts it.
    armed: Arc<Mutex<Option<(Store, Shutdown)>>>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            sender: broadcast::channel(BACKLOG).0,
            armed: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").finish_non_exhaustive()
    }
}

const SHUTDOWN: &str = "shutdown";
const RESYNC: &str = "resync";

impl Changes {
    /// Readies the pump for `store`, to run until `shutdown` once a stream opens.
    pub fn arm(&self, store: Store, shutdown: Shutdown) {
        if let Ok(mut armed) = self.armed.lock() {
            *armed = Some((store, shutdown));
        }
    }

    /// Starts the pump if it is armed and not running yet.
    fn start(&self) {
        let armed = self.armed.lock().ok().and_then(|mut a| a.take());
        if let Some((store, shutdown)) = armed {
            tokio::spawn(pump(store, self.clone(), shutdown));
        }
    }

    fn send(&self, event: &str, data: String) {
        // No stream open: nobody to tell.
        let _ = self.sender.send(Change {
            event: event.to_string(),
            data,
        });
    }
}

/// Live changes: `ticket` (`{"id", "status", "kind", "priority"}`), `booking` (`{"id",
/// "ticket_id", "technician_id", "cancelled"}`), `prediction` (`{"count"}`: a cycle's scores
/// written), `resync` (changes were missed: read again). Keep-alive comments every 15 s.
#[utoipa::path(get, path = "/stream", tag = "stream",
    responses((status = 200, content_type = "text/event-stream", body = String,
               description = "Server-sent events"), Refusals),
    security(("api_key" = [])))]
async fn stream(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    caller.allow(
        &[Role::Admin, Role::Dispatcher, Role::Integration],
        "follow live changes",
    )?;
    let receiver = state.changes.sender.subscribe();
    state.changes.start();
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(change) if change.event == SHUTDOWN => return None,
            Ok(change) => Event::default().event(change.event).data(change.data),
            Err(broadcast::error::RecvError::Lagged(missed)) => Event::default()
                .event(RESYNC)
                .data(format!("{{\"missed\":{missed}}}")),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Listens to the database's changes and hands them to [`Changes`] until `shutdown`, then
/// ends every open stream. A lost listening connection is opened again (after a second),
/// and streams are told to resync.
pub async fn pump(store: Store, changes: Changes, mut shutdown: Shutdown) {
    loop {
        match store.listen_changes().await {
            Ok(mut listener) => loop {
                tokio::select! {
                    () = shutdown.wait() => {
                        changes.send(SHUTDOWN, String::new());
                        return;
                    }
                    next = listener.next() => match next {
                        Ok(payload) => {
                            // Sent compact, named by its `type`.
                            let value = serde_json::from_str::<serde_json::Value>(&payload)
                                .unwrap_or(serde_json::Value::Null);
                            let event = value
                                .get("type")
                                .and_then(|t| t.as_str())
                                .unwrap_or("change")
                                .to_string();
                            changes.send(&event, value.to_string());
                        }
                        Err(error) => {
                            tracing::warn!(%error, "live changes: listening connection lost");
                            break;
                        }
                    }
                }
            },
            Err(error) => tracing::warn!(%error, "live changes: cannot listen"),
        }
        changes.send(RESYNC, "{\"missed\":null}".to_string());
        tokio::select! {
            () = shutdown.wait() => {
                changes.send(SHUTDOWN, String::new());
                return;
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
