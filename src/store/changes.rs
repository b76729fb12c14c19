//! Live changes (`GET /api/v1/stream`): tickets and bookings announce every write through
//! triggers, predictions from `insert_predictions`, all on one channel
//! (`forewarn_changes`), delivered when the writing transaction commits — whichever stage
//! or replica wrote.

use sqlx::postgres::PgListener;

use super::{Store, StoreError};

/// The channel every change is announced on.
pub const CHANGES_CHANNEL: &str = "forewarn_changes";

/// A connection listening to [`CHANGES_CHANNEL`].
pub struct ChangeListener {
    listener: PgListener,
}

impl Store {
    /// Listens for changes on a connection of its own: never one of the pool's, which a
    /// listener would hold for good (ingest's connections are its own to use).
    pub async fn listen_changes(&self) -> Result<ChangeListener, StoreError> {
        let options = (*self.pool.connect_options())
            .clone()
            .application_name("forewarn-changes");
        let own = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&own).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(ChangeListener { listener })
    }
}

impl ChangeListener {
    /// The next change's JSON payload; an error when the connection was lost (the
    /// notifications meanwhile are gone: the caller tells its clients to read again).
    pub async fn next(&mut self) -> Result<String, StoreError> {
        match self.listener.try_recv().await? {
            Some(notification) => Ok(notification.payload().to_string()),
            None => Err(StoreError::Unsupported(
                "the change listener lost its connection",
            )),
        }
    }
}
