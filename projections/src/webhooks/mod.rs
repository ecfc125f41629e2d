//! Webhooks' read side (docs/adr/0012): the `webhooks` table, each subscription's current
//! version, kept from its `webhook` stream; and, in files of their own, what its deliveries
//! keep: `state.rs` the cursor, retries, pause and lease, `deliveries.rs` every attempt. The
//! delivering itself is HTTP, so it lives in the api crate (`api/src/webhooks/`).

pub mod deliveries;
pub mod state;

use chrono::{DateTime, Utc};

use colloquy_domain::definition::DefinitionEvent;
use colloquy_domain::webhook::Webhook;
use colloquy_infra::event::Metadata;
use colloquy_infra::{Store, StoreError, StoredEvent};

use crate::on_tx;
use crate::runtime::{Projection, ProjectionError, Tx};

/// The projection's (and its checkpoint's) name.
pub const NAME: &str = "webhooks";

/// The subscriptions' table, which a rebuild clears; the others keep deliveries' progress.
const TABLE: &str = "webhooks";

/// Keeps `webhooks`, and starts a new subscription's `webhook_state` at its creation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Webhooks;

/// A subscription as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Its tenant.
    pub tenant_id: String,
    /// Its id.
    pub id: String,
    /// Its current version.
    pub version: u32,
    /// What that version says.
    pub webhook: Webhook,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its current version was recorded.
    pub updated_at: DateTime<Utc>,
}

fn unreadable(error: serde_json::Error) -> ProjectionError {
    ProjectionError::from(sqlx::Error::Decode(Box::new(error)))
}

async fn apply_one(tx: &mut Tx<'_>, stored: &StoredEvent) -> Result<(), ProjectionError> {
    let tenant = stored.tenant_id().unwrap_or_default();
    let id = stored.aggregate_id.as_str();
    match stored.decode::<DefinitionEvent<Webhook>>()? {
        DefinitionEvent::Created { version, definition, created_at, .. } => {
            let position = stored.position.unwrap_or_default();
            let json = serde_json::to_string(&definition).map_err(unreadable)?;
            let insert = "INSERT INTO webhooks (tenant_id, id, version, definition, created_position, created_at, updated_at)
                          VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (tenant_id, id) DO NOTHING";
            // Deliveries start after the event that created it; a rebuild keeps where they are.
            let start = "INSERT INTO webhook_state (tenant_id, webhook_id, cursor) VALUES ($1, $2, $3)
                         ON CONFLICT (tenant_id, webhook_id) DO NOTHING";
            let created_at = created_at.to_rfc3339();
            on_tx!(tx, |conn| {
                sqlx::query(insert)
                    .bind(&tenant)
                    .bind(id)
                    .bind(i64::from(version))
                    .bind(&json)
                    .bind(position)
                    .bind(&created_at)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(start).bind(&tenant).bind(id).bind(position).execute(&mut *conn).await?;
            });
        }
        DefinitionEvent::Revised { version, definition, revised_at } => {
            let json = serde_json::to_string(&definition).map_err(unreadable)?;
            let sql = "UPDATE webhooks SET version = $3, definition = $4, updated_at = $5
                       WHERE tenant_id = $1 AND id = $2 AND version < $3";
            on_tx!(tx, |conn| {
                sqlx::query(sql)
                    .bind(&tenant)
                    .bind(id)
                    .bind(i64::from(version))
                    .bind(&json)
                    .bind(revised_at.to_rfc3339())
                    .execute(conn)
                    .await?;
            });
        }
        DefinitionEvent::Deleted { .. } => {
            let sql = "UPDATE webhooks SET deleted = true WHERE tenant_id = $1 AND id = $2";
            let stop = "DELETE FROM webhook_state WHERE tenant_id = $1 AND webhook_id = $2";
            on_tx!(tx, |conn| {
                sqlx::query(sql).bind(&tenant).bind(id).execute(&mut *conn).await?;
                sqlx::query(stop).bind(&tenant).bind(id).execute(&mut *conn).await?;
            });
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Projection for Webhooks {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handles(&self, event: &StoredEvent) -> bool {
        event.aggregate_type == <Webhook as colloquy_domain::definition::Definition>::TYPE
    }

    fn metadata(&self) -> Metadata {
        Metadata::TenantOnly
    }

    async fn apply(&self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        for stored in events.iter().filter(|e| self.handles(e)) {
            apply_one(tx, stored).await?;
        }
        Ok(())
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TABLE, state::TABLE, deliveries::TABLE]
    }

    /// Only the subscriptions: where each one's deliveries are, and their log, outlive a rebuild.
    async fn clear(&self, tx: &mut Tx<'_>) -> Result<(), ProjectionError> {
        Ok(tx.empty(&[TABLE]).await?)
    }
}

type Row = (String, String, i64, String, String, String);

const COLUMNS: &str = "tenant_id, id, version, definition, created_at, updated_at";

fn subscription(row: Row) -> Result<Subscription, StoreError> {
    let (tenant_id, id, version, definition, created_at, updated_at) = row;
    let corrupt = |what: &str| StoreError::Corrupt(format!("webhook {id}: {what}"));
    let instant = |text: &str| {
        DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| corrupt("a time"))
    };
    Ok(Subscription {
        webhook: serde_json::from_str(&definition).map_err(|e| corrupt(&e.to_string()))?,
        version: u32::try_from(version).map_err(|_| corrupt("its version"))?,
        created_at: instant(&created_at)?,
        updated_at: instant(&updated_at)?,
        tenant_id,
        id,
    })
}

/// The most subscriptions a tenant lists.
pub const MAX_LISTED: i64 = 1000;

/// `tenant`'s subscriptions (not deleted), oldest first.
pub async fn list(store: &Store, tenant: &str) -> Result<Vec<Subscription>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM webhooks WHERE tenant_id = $1 AND NOT deleted ORDER BY created_at, id LIMIT {MAX_LISTED}"
    );
    let rows: Vec<Row> =
        colloquy_infra::on_pool!(store, |pool| sqlx::query_as(&sql).bind(tenant).fetch_all(pool).await?);
    rows.into_iter().map(subscription).collect()
}

/// Subscription `id` of `tenant`, unless deleted.
pub async fn get(store: &Store, tenant: &str, id: &str) -> Result<Option<Subscription>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE tenant_id = $1 AND id = $2 AND NOT deleted");
    let row: Option<Row> = colloquy_infra::on_pool!(store, |pool| sqlx::query_as(&sql)
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await?);
    row.map(subscription).transpose()
}

/// Every tenant's subscriptions that receive events (not deleted, active): what the delivering
/// processes share out.
pub async fn receiving(store: &Store) -> Result<Vec<Subscription>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE NOT deleted ORDER BY tenant_id, id");
    let rows: Vec<Row> = colloquy_infra::on_pool!(store, |pool| sqlx::query_as(&sql).fetch_all(pool).await?);
    Ok(rows
        .into_iter()
        .map(subscription)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|s| s.webhook.active)
        .collect())
}
