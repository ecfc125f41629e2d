//! The `definitions` table: each business calendar's and SLA policy's current version, as the
//! clocks ([`catalog`]) and the listings ([`list`]) read them. Every version stays on its own
//! aggregate's stream; this table is only the latest of each.

use chrono::{DateTime, Utc};
use sqlx::Row;

use colloquy_domain::calendar::{Calendar, CalendarVersion};
use colloquy_domain::definition::{Definition, DefinitionEvent};
use colloquy_domain::sla::{Catalog, CatalogPolicy, PolicyVersion, SlaPolicy};
use colloquy_domain::TenantId;
use colloquy_infra::{Store, StoreError, StoredEvent};

use crate::on_tx;
use crate::runtime::{ProjectionError, Tx};

/// The table.
pub const TABLE: &str = "definitions";

/// Applies one event of a definition of kind `D` to its row.
pub(super) async fn apply<D: Definition>(
    tx: &mut Tx<'_>,
    stored: &StoredEvent,
) -> Result<(), ProjectionError> {
    let tenant = stored.tenant_id().unwrap_or_default();
    let id = stored.aggregate_id.as_str();
    match stored.decode::<DefinitionEvent<D>>()? {
        DefinitionEvent::Created { version, definition, created_at, .. } => {
            let sql = "INSERT INTO definitions (tenant_id, kind, id, version, name, definition, created_at, recorded_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (tenant_id, kind, id) DO NOTHING";
            let json = serde_json::to_string(&definition)
                .map_err(|e| ProjectionError::from(sqlx::Error::Decode(Box::new(e))))?;
            on_tx!(tx, |conn| {
                sqlx::query(sql)
                    .bind(&tenant)
                    .bind(D::TYPE)
                    .bind(id)
                    .bind(i64::from(version))
                    .bind(definition.name())
                    .bind(&json)
                    .bind(created_at)
                    .execute(conn)
                    .await?;
            });
        }
        DefinitionEvent::Revised { version, definition, revised_at } => {
            let sql = "UPDATE definitions SET version = $4, name = $5, definition = $6, recorded_at = $7
                       WHERE tenant_id = $1 AND kind = $2 AND id = $3 AND version < $4";
            let json = serde_json::to_string(&definition)
                .map_err(|e| ProjectionError::from(sqlx::Error::Decode(Box::new(e))))?;
            on_tx!(tx, |conn| {
                sqlx::query(sql)
                    .bind(&tenant)
                    .bind(D::TYPE)
                    .bind(id)
                    .bind(i64::from(version))
                    .bind(definition.name())
                    .bind(&json)
                    .bind(revised_at)
                    .execute(conn)
                    .await?;
            });
        }
        DefinitionEvent::Deleted { .. } => {
            let sql = "UPDATE definitions SET deleted = true WHERE tenant_id = $1 AND kind = $2 AND id = $3";
            on_tx!(tx, |conn| {
                sqlx::query(sql).bind(&tenant).bind(D::TYPE).bind(id).execute(conn).await?;
            });
        }
    }
    Ok(())
}

/// Whether `tenant` has (or had) an SLA policy, as of the batch being applied: before its first,
/// conversations need no clocks.
pub(super) async fn has_policies(tx: &mut Tx<'_>, tenant: &str) -> Result<bool, ProjectionError> {
    let sql = "SELECT count(*) FROM definitions WHERE tenant_id = $1 AND kind = $2";
    let count: i64 = on_tx!(tx, |conn| {
        sqlx::query_scalar(sql).bind(tenant).bind(SlaPolicy::TYPE).fetch_one(conn).await?
    });
    Ok(count > 0)
}

/// One listed definition: its current version.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// Its id.
    pub id: String,
    /// Its current version.
    pub version: u32,
    /// Its name.
    pub name: String,
    /// The current version's definition, as JSON.
    pub definition: serde_json::Value,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its current version was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// The most definitions of one kind a listing returns.
pub const MAX_LISTED: i64 = 500;

/// The live definitions of kind `D` of `tenant`, oldest first, at most [`MAX_LISTED`].
pub async fn list<D: Definition>(store: &Store, tenant: &TenantId) -> Result<Vec<Listed>, StoreError> {
    let rows = rows(store, tenant, &[D::TYPE], MAX_LISTED).await?;
    Ok(rows.into_iter().map(|(_, listed)| listed).collect())
}

async fn rows(
    store: &Store,
    tenant: &TenantId,
    kinds: &[&str],
    limit: i64,
) -> Result<Vec<(String, Listed)>, StoreError> {
    let placeholders = (0..kinds.len()).map(|i| format!("${}", i + 3)).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT kind, id, version, name, definition, created_at, recorded_at FROM definitions
          WHERE tenant_id = $1 AND NOT deleted AND kind IN ({placeholders})
          ORDER BY created_at, id LIMIT $2"
    );
    let rows = colloquy_infra::on_pool!(store, |pool| {
        let mut query = sqlx::query(&sql).bind(tenant.as_str()).bind(limit);
        for kind in kinds {
            query = query.bind(*kind);
        }
        let rows = query.fetch_all(pool).await?;
        rows.iter()
            .map(|row| -> Result<_, sqlx::Error> {
                let definition: String = row.try_get("definition")?;
                let version: i32 = row.try_get("version")?;
                Ok((
                    row.try_get::<String, _>("kind")?,
                    Listed {
                        id: row.try_get("id")?,
                        version: u32::try_from(version).unwrap_or_default(),
                        name: row.try_get("name")?,
                        definition: serde_json::from_str(&definition)
                            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                        created_at: row.try_get("created_at")?,
                        recorded_at: row.try_get("recorded_at")?,
                    },
                ))
            })
            .collect::<Result<Vec<_>, _>>()?
    });
    Ok(rows)
}

/// What `tenant`'s clocks decide with now: its live policies and calendars, oldest first.
pub async fn catalog(store: &Store, tenant: &TenantId) -> Result<Catalog, StoreError> {
    let mut catalog = Catalog::default();
    let decode = |e: serde_json::Error| StoreError::Database(sqlx::Error::Decode(Box::new(e)));
    for (kind, listed) in rows(store, tenant, &[SlaPolicy::TYPE, Calendar::TYPE], 2 * MAX_LISTED).await? {
        let id = uuid::Uuid::parse_str(&listed.id)
            .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
        if kind == SlaPolicy::TYPE {
            let policy: SlaPolicy = serde_json::from_value(listed.definition).map_err(decode)?;
            catalog.policies.push(CatalogPolicy {
                version: PolicyVersion { policy_id: id, version: listed.version, policy },
                recorded_at: listed.recorded_at,
            });
        } else {
            let calendar: Calendar = serde_json::from_value(listed.definition).map_err(decode)?;
            catalog.calendars.push(CalendarVersion { calendar_id: id, version: listed.version, calendar });
        }
    }
    Ok(catalog)
}
