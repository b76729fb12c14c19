//! Live changes (`GET /api/v1/stream`): tickets and bookings announce every write through
//! triggers, predictions from `insert_predictions`, all on one channel
//! (`forewarn_changes`), delivered when the writing transaction commits — whichever stage
//! or replica wrote.

use sqlx::postgres::PgListener;

use super::{Store, StoreError};

/// The channel every change is announced on.
pub const CHANGES_CHANNEL: &str = "forewarn_changes";

/// The channel a key's revocation (or any change to what a key may do) is announced on,
/// with the key's id (migration 0016): API processes forget the keys they remember.
pub const KEYS_CHANNEL: &str = "forewarn_keys";

/// A connection listening to [`CHANGES_CHANNEL`].
pub struct ChangeListener {
    listener: PgListener,
}

impl Store {
    /// Listens for changes on a connection of its own: never one of the pool's, which a
    /// listener would hold for good (ingest's connections are its own to use).
    pub async fn listen_changes(&self) -> Result<ChangeListener, StoreError> {
        self.listen_on(CHANGES_CHANNEL, "forewarn-changes").await
    }

    /// Listens for key changes ([`KEYS_CHANNEL`]) on a connection of its own.
    pub async fn listen_keys(&self) -> Result<ChangeListener, StoreError> {
        self.listen_on(KEYS_CHANNEL, "forewarn-keys").await
    }

    async fn listen_on(
        &self,
        channel: &str,
        application: &str,
    ) -> Result<ChangeListener, StoreError> {
        let options = (*self.pool.connect_options())
            .clone()
            .application_name(application);
        let own = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&own).await?;
        // A lost connection is reported at once (the caller reconnects and says what was
        // missed), not after sqlx has connected again while nothing was heard.
        listener.eager_reconnect(false);
        listener.listen(channel).await?;
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
