//! Webhooks' signing secrets (`webhook_secrets`), sealed under the master key like the contacts'
//! data keys (docs/adr/0012): a copy of the database without `COLLOQUY_MASTER_KEY` does not sign
//! as the subscription. A rotation keeps the previous secret until a given instant, so a
//! receiver that has not switched yet still verifies one of the signatures sent meanwhile.

use crate::error::StoreError;
use crate::store::Store;
use crate::tx::{Durability, File};

/// What the secrets are bound to when sealed.
const KIND: &str = "webhook secret";

/// A subscription's secrets, opened.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    /// The secret requests are signed with.
    pub current: String,
    /// The one before a rotation, and until when (Unix milliseconds) it still signs.
    pub previous: Option<(String, i64)>,
    /// When it was last rotated (Unix milliseconds), if ever.
    pub rotated_at: Option<i64>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("previous_until", &self.previous.as_ref().map(|(_, until)| until))
            .field("rotated_at", &self.rotated_at)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// The secrets that sign at `now_ms`: the current one, and the previous while its grace lasts.
    pub fn signing(&self, now_ms: i64) -> Vec<&str> {
        let mut signing = vec![self.current.as_str()];
        if let Some((previous, until)) = &self.previous {
            if *until > now_ms {
                signing.push(previous);
            }
        }
        signing
    }
}

async fn seal(
    store: &Store,
    tenant: &str,
    owner: &str,
    secret: &str,
) -> Result<(String, Vec<u8>), StoreError> {
    store.keys().seal_secret(KIND, tenant, owner, secret.as_bytes()).await
}

async fn open(
    store: &Store,
    tenant: &str,
    owner: &str,
    master: &str,
    sealed: &[u8],
) -> Result<String, StoreError> {
    let bytes = store.keys().open_secret((KIND, tenant, owner), master, sealed).await?;
    String::from_utf8(bytes)
        .map_err(|_| StoreError::Corrupt(format!("the secret of webhook {owner} is not text")))
}

/// Keeps `secret` as webhook `owner`'s, replacing any (a new subscription).
pub async fn put(store: &Store, tenant: &str, owner: &str, secret: &str) -> Result<(), StoreError> {
    let (master, sealed) = seal(store, tenant, owner, secret).await?;
    let sql = "INSERT INTO webhook_secrets (tenant_id, webhook_id, master_key_id, secret)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (tenant_id, webhook_id) DO UPDATE SET master_key_id = excluded.master_key_id,
                   secret = excluded.secret, previous_master_key_id = NULL, previous_secret = NULL,
                   previous_until = NULL, rotated_at = NULL";
    let mut tx = store.begin(File::Events, Durability::Durable).await?;
    crate::on_tx!(&mut *tx, |conn| {
        sqlx::query(sql).bind(tenant).bind(owner).bind(&master).bind(&sealed).execute(&mut *conn).await?;
    });
    Ok(tx.commit().await?)
}

/// Makes `secret` webhook `owner`'s current secret; the one it replaces still signs until
/// `previous_until` (Unix milliseconds). False when the webhook has no secret here.
pub async fn rotate(
    store: &Store,
    tenant: &str,
    owner: &str,
    secret: &str,
    (now_ms, previous_until): (i64, i64),
) -> Result<bool, StoreError> {
    let (master, sealed) = seal(store, tenant, owner, secret).await?;
    let sql = "UPDATE webhook_secrets SET previous_master_key_id = master_key_id, previous_secret = secret,
                      previous_until = $5, master_key_id = $3, secret = $4, rotated_at = $6
                WHERE tenant_id = $1 AND webhook_id = $2";
    let mut tx = store.begin(File::Events, Durability::Durable).await?;
    let updated = crate::on_tx!(&mut *tx, |conn| {
        sqlx::query(sql)
            .bind(tenant)
            .bind(owner)
            .bind(&master)
            .bind(&sealed)
            .bind(previous_until)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    });
    tx.commit().await?;
    Ok(updated > 0)
}

/// Webhook `owner`'s secrets, if it has any.
pub async fn get(store: &Store, tenant: &str, owner: &str) -> Result<Option<Secrets>, StoreError> {
    type Row = (String, Vec<u8>, Option<String>, Option<Vec<u8>>, Option<i64>, Option<i64>);
    let sql =
        "SELECT master_key_id, secret, previous_master_key_id, previous_secret, previous_until, rotated_at
                 FROM webhook_secrets WHERE tenant_id = $1 AND webhook_id = $2";
    let row: Option<Row> = crate::on_pool!(store, |pool| sqlx::query_as(sql)
        .bind(tenant)
        .bind(owner)
        .fetch_optional(pool)
        .await?);
    let Some((master, sealed, previous_master, previous_sealed, previous_until, rotated_at)) = row else {
        return Ok(None);
    };
    let current = open(store, tenant, owner, &master, &sealed).await?;
    let previous = match (previous_master, previous_sealed, previous_until) {
        (Some(master), Some(sealed), Some(until)) => {
            Some((open(store, tenant, owner, &master, &sealed).await?, until))
        }
        _ => None,
    };
    Ok(Some(Secrets { current, previous, rotated_at }))
}

/// Forgets webhook `owner`'s secrets (it was deleted).
pub async fn delete(store: &Store, tenant: &str, owner: &str) -> Result<(), StoreError> {
    let sql = "DELETE FROM webhook_secrets WHERE tenant_id = $1 AND webhook_id = $2";
    let mut tx = store.begin(File::Events, Durability::Durable).await?;
    crate::on_tx!(&mut *tx, |conn| {
        sqlx::query(sql).bind(tenant).bind(owner).execute(&mut *conn).await?;
    });
    Ok(tx.commit().await?)
}
