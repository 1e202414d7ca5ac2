//! The keys that sign the gateway's tenant context: each key's private seed,
//! when it starts signing and when it stops being published. The crypto is
//! the server's; the catalog only keeps the keys and their schedule.

use time::OffsetDateTime;

use crate::audit::{append, NewAuditEntry};
use crate::catalog::Catalog;
use crate::codec::{from_nanos, opt_from_nanos, to_nanos};
use crate::{Result, StoreError};

/// One stored signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    /// The JWS `kid`: public, unique, never reused.
    pub kid: String,
    /// The Ed25519 private key's 32-byte seed.
    pub seed: [u8; 32],
    pub created_at: OffsetDateTime,
    /// Contexts are signed with the newest key whose `signs_from` has passed.
    pub signs_from: OffsetDateTime,
    /// When the key leaves the published set; `None` while it has no successor.
    pub retires_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for StoredSigningKey {
    // The seed is a secret: it never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("signs_from", &self.signs_from)
            .field("retires_at", &self.retires_at)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    kid: String,
    seed: Vec<u8>,
    created_at: i64,
    signs_from: i64,
    retires_at: Option<i64>,
}

impl Row {
    fn into_key(self) -> Result<StoredSigningKey> {
        let seed = <[u8; 32]>::try_from(self.seed.as_slice()).map_err(|_| {
            StoreError::Corrupt(format!("signing_keys.seed of {} is not 32 bytes", self.kid))
        })?;
        Ok(StoredSigningKey {
            seed,
            created_at: from_nanos(self.created_at)?,
            signs_from: from_nanos(self.signs_from)?,
            retires_at: opt_from_nanos(self.retires_at)?,
            kid: self.kid,
        })
    }
}

impl Catalog {
    /// The keys still published at `now`, oldest first.
    pub async fn published_signing_keys(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<StoredSigningKey>> {
        sqlx::query_as::<_, Row>(
            "SELECT * FROM signing_keys WHERE retires_at IS NULL OR retires_at > $1
             ORDER BY signs_from, created_at",
        )
        .bind(to_nanos(now))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Row::into_key)
        .collect()
    }

    /// Adds `key` as the successor of every key that has none: those retire
    /// at `retire_others_at`. The audit entry names the new key, never its seed.
    pub async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        retire_others_at: OffsetDateTime,
        audit: &NewAuditEntry,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE signing_keys SET retires_at = $1 WHERE retires_at IS NULL")
            .bind(to_nanos(retire_others_at))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, seed, created_at, signs_from, retires_at)
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(&key.kid)
        .bind(key.seed.as_slice())
        .bind(to_nanos(key.created_at))
        .bind(to_nanos(key.signs_from))
        .execute(&mut *tx)
        .await?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes keys that retired before `before`: nothing they signed is valid.
    pub async fn delete_retired_signing_keys(&self, before: OffsetDateTime) -> Result<u64> {
        let deleted = sqlx::query("DELETE FROM signing_keys WHERE retires_at <= $1")
            .bind(to_nanos(before))
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected())
    }
}
