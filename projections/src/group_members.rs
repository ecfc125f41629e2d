//! The `group_members` read model: every current membership (group, contact, role, since when),
//! kept from Group events, for questions across groups such as the groups a contact is in. One
//! group's members, now or at a past moment, are answered from the Group aggregate itself.

use chrono::{DateTime, Utc};
use sqlx::Row;

use colloquy_domain::group::Role;
use colloquy_domain::GroupEvent;
use colloquy_infra::event::Metadata;
use colloquy_infra::{Store, StoreError, StoredEvent};

use crate::on_tx;
use crate::runtime::{Projection, ProjectionError, Tx};

/// The projection's (and its checkpoint's) name.
pub const NAME: &str = "group_members";

/// Keeps `group_members`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupMembers;

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Member => "member",
        Role::Admin => "admin",
        Role::Superadmin => "superadmin",
    }
}

async fn upsert(
    tx: &mut Tx<'_>,
    tenant: &str,
    group: &str,
    contact: &str,
    role: Role,
    since: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let sql =
        "INSERT INTO group_members (tenant_id, group_id, contact_id, role, since) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (tenant_id, group_id, contact_id) DO UPDATE SET role = excluded.role";
    on_tx!(tx, |conn| {
        sqlx::query(sql)
            .bind(tenant)
            .bind(group)
            .bind(contact)
            .bind(role_name(role))
            .bind(since)
            .execute(conn)
            .await?;
    });
    Ok(())
}

async fn remove(tx: &mut Tx<'_>, tenant: &str, group: &str, contact: &str) -> Result<(), ProjectionError> {
    let sql = "DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2 AND contact_id = $3";
    on_tx!(tx, |conn| {
        sqlx::query(sql).bind(tenant).bind(group).bind(contact).execute(conn).await?;
    });
    Ok(())
}

async fn change_role(
    tx: &mut Tx<'_>,
    tenant: &str,
    group: &str,
    contact: &str,
    role: Role,
) -> Result<(), ProjectionError> {
    let sql = "UPDATE group_members SET role = $4 WHERE tenant_id = $1 AND group_id = $2 AND contact_id = $3";
    on_tx!(tx, |conn| {
        sqlx::query(sql).bind(tenant).bind(group).bind(contact).bind(role_name(role)).execute(conn).await?;
    });
    Ok(())
}

#[async_trait::async_trait]
impl Projection for GroupMembers {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handles(&self, event: &StoredEvent) -> bool {
        event.aggregate_type == "group"
    }

    /// Of the metadata, only the tenant is read.
    fn metadata(&self) -> Metadata {
        Metadata::TenantOnly
    }

    async fn apply(&self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        for stored in events.iter().filter(|e| e.aggregate_type == "group") {
            let event: GroupEvent = stored.decode()?;
            let group = stored.aggregate_id.as_str();
            let tenant = stored.tenant_id().unwrap_or_default();
            let tenant = tenant.as_str();
            match event {
                GroupEvent::GroupCreated { members, created_at, .. } => {
                    for member in members {
                        upsert(tx, tenant, group, &member.contact_id.to_string(), member.role, created_at)
                            .await?;
                    }
                }
                GroupEvent::MemberAdded { contact_id, role, added_at, .. } => {
                    upsert(tx, tenant, group, &contact_id.to_string(), role, added_at).await?;
                }
                GroupEvent::MemberRemoved { contact_id, .. } | GroupEvent::MemberLeft { contact_id, .. } => {
                    remove(tx, tenant, group, &contact_id.to_string()).await?;
                }
                GroupEvent::MemberPromoted { contact_id, to, .. }
                | GroupEvent::MemberDemoted { contact_id, to, .. } => {
                    change_role(tx, tenant, group, &contact_id.to_string(), to).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn tables(&self) -> &'static [&'static str] {
        &["group_members"]
    }
}

/// One membership of a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The group.
    pub group_id: String,
    /// The contact's role in it.
    pub role: String,
    /// Member since.
    pub since: DateTime<Utc>,
}

/// The groups `contact` of `tenant` is a member of, by group id, `limit` from `offset`.
pub async fn groups_of(
    store: &Store,
    tenant: &str,
    contact: &str,
    offset: u64,
    limit: usize,
) -> Result<Vec<Membership>, StoreError> {
    let sql = "SELECT group_id, role, since FROM group_members WHERE tenant_id = $1 AND contact_id = $2
               ORDER BY group_id LIMIT $3 OFFSET $4";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let rows = colloquy_infra::on_pool!(store, |pool| {
        let rows =
            sqlx::query(sql).bind(tenant).bind(contact).bind(limit).bind(offset).fetch_all(pool).await?;
        rows.iter()
            .map(|row| -> Result<Membership, sqlx::Error> {
                Ok(Membership {
                    group_id: row.try_get("group_id")?,
                    role: row.try_get("role")?,
                    since: row.try_get("since")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    });
    Ok(rows)
}
