//! API keys (`api_keys`): made (only the hash kept), found by hash, listed, revoked; and
//! what a technician's key may see.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

/// A key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub technician_id: Option<i32>,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A key to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub technician_id: Option<i32>,
    pub prefix: &'a str,
    pub hash: &'a [u8; 32],
    pub created_by: &'a str,
}

/// The columns of [`ApiKeyRow`], for `concat!`.
macro_rules! columns {
    () => {
        "id, name, role, technician_id, prefix, created_at, created_by, revoked_at, last_used_at"
    };
}

impl Store {
    /// Stores a new key; returns it as stored.
    pub async fn create_api_key(&self, key: &NewApiKey<'_>) -> Result<ApiKeyRow, StoreError> {
        Ok(sqlx::query_as(concat!(
            "insert into api_keys (name, role, technician_id, prefix, hash, created_by)
             values ($1, $2, $3, $4, $5, $6) returning ",
            columns!()
        ))
        .bind(key.name)
        .bind(key.role)
        .bind(key.technician_id)
        .bind(key.prefix)
        .bind(key.hash.as_slice())
        .bind(key.created_by)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The live (not revoked) key with this hash.
    pub async fn api_key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "select ",
            columns!(),
            " from api_keys where hash = $1 and revoked_at is null"
        ))
        .bind(hash.as_slice())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every key, newest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "select ",
            columns!(),
            " from api_keys order by id desc"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a key: it stops working in every serving process once they hear of it on
    /// [`KEYS_CHANNEL`](super::KEYS_CHANNEL) (at commit; milliseconds). False when there is
    /// no live key `id`.
    pub async fn revoke_api_key(&self, id: i64) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "update api_keys set revoked_at = now() where id = $1 and revoked_at is null",
        )
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Notes that a key was used (at most once a minute per key, so busy keys do not write
    /// on every request).
    pub async fn touch_api_key(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "update api_keys set last_used_at = now()
             where id = $1 and (last_used_at is null or last_used_at < now() - interval '1 minute')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The technician of this external id, if any.
    pub async fn technician_id(&self, external_id: &str) -> Result<Option<i32>, StoreError> {
        Ok(
            sqlx::query_scalar("select id from technicians where external_id = $1")
                .bind(external_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Whether a technician has a job (an open or booked ticket, now or ever assigned)
    /// on this device: what their key may see of the fleet.
    pub async fn technician_sees_device(
        &self,
        technician_id: i32,
        external_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "select exists (
                 select 1 from tickets t join devices d on d.id = t.device_id
                 where d.external_id = $2
                   and (t.technician_id = $1
                        or exists (select 1 from bookings b
                                   where b.ticket_id = t.id and b.technician_id = $1)))",
        )
        .bind(technician_id)
        .bind(external_id)
        .fetch_one(&self.pool)
        .await?)
    }
}
