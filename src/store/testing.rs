//! For the integration tests only. The TimescaleDB test lane serves one connection at a
//! time, so its row checks cannot open a connection of their own beside the store's: they
//! share the store's pool, which only this constructor hands out. A store made by
//! [`Store::connect`] never gives its pool away, and no code under `src/` calls this.

use sqlx::PgPool;

use super::{Store, StoreError};
use crate::config::{DatabaseConfig, StorageConfig};

/// [`Store::connect`], and a handle on the store's own pool for the test's row checks.
pub async fn connect_sharing_pool(
    url: &str,
    database: &DatabaseConfig,
    storage: &StorageConfig,
) -> Result<(Store, PgPool), StoreError> {
    let store = Store::connect(url, database, storage).await?;
    let pool = store.pool.clone();
    Ok((store, pool))
}
