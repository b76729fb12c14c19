//! [`StoreTx`]: one database transaction, for a caller that must write several table
//! families at once (a stage writes a ticket, its booking and its outbox row, all or none)
//! without importing sqlx. Each family adds its transactional writes in its own file, in an
//! `impl StoreTx` block beside the pool's version, both executing the same SQL text.

use super::{Store, StoreError};

/// An open transaction on one of the store's connections. Nothing written through it is
/// visible to other connections until [`StoreTx::commit`]; [`StoreTx::rollback`], or
/// dropping it, discards everything (the connection goes back to the pool either way).
#[derive(Debug)]
pub struct StoreTx {
    transaction: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl Store {
    /// Opens a transaction on a connection of the store's pool; it holds that connection
    /// until it is committed, rolled back or dropped.
    pub async fn begin(&self) -> Result<StoreTx, StoreError> {
        Ok(StoreTx {
            transaction: self.pool.begin().await?,
        })
    }
}

impl StoreTx {
    /// Makes everything written through this transaction visible at once.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.transaction.commit().await?;
        Ok(())
    }

    /// Discards everything written through this transaction (as dropping it does, but
    /// waits for the server and reports an error).
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.transaction.rollback().await?;
        Ok(())
    }

    /// The transaction's connection, for the families' statements.
    pub(super) fn connection(&mut self) -> &mut sqlx::PgConnection {
        &mut self.transaction
    }
}
