//! The `group_conversations` process manager: when the inbox leaves (or is removed from) a group,
//! every open or pending conversation of that group is closed, each closing event carrying the
//! leave event's id as its causation id and the leave's correlation id.
//!
//! It works in two halves, so that issuing commands never happens inside a projector's
//! transaction:
//! - [`GroupConversations`] is a projection: from the ordered log it records which conversations
//!   each group has (`group_conversations`) and each leave still to act on (`group_leaves`), in the
//!   same transaction as its checkpoint. The mapping comes from the same log as the leave, so a
//!   conversation opened just before a leave is always known when the leave is acted on.
//! - [`run_closer`] reads pending leaves and sends `CloseForLeftGroup` to each of the group's
//!   conversations, then marks the leave done. The command is idempotent (a conversation that is
//!   no longer open or pending records nothing), so a crash between the closes and the mark, or
//!   two processes closing at once, closes nothing twice. Done leaves are kept, so rebuilding the
//!   projection does not close conversations that agents reopened since.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sqlx::Row;
use tokio::sync::watch;
use uuid::Uuid;

use colloquy_domain::{Actor, ActorKind, Conversation, ConversationCommand, ConversationError, TenantId};
use colloquy_infra::{CommandError, Intent, Origin, Repository, Store, StoreError, StoredEvent};
use colloquy_infra::{Durability, File};

use crate::on_tx;
use crate::runtime::{Projection, ProjectionError, Tx};

/// The projection's (and its checkpoint's) name.
pub const NAME: &str = "group_conversations";

/// The actor recorded on the closing events.
pub const CLOSER_ACTOR: &str = "group-leave";

/// How often the closer looks for leaves to act on.
const POLL: Duration = Duration::from_millis(200);

/// Leaves acted on per round.
const LEAVES_PER_ROUND: i64 = 50;

/// Records each group's conversations and the leaves still to act on.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupConversations;

/// The part of a `ConversationOpened` payload this projection reads.
#[derive(Debug, Deserialize)]
struct Opened {
    #[serde(rename = "ConversationOpened")]
    fields: OpenedFields,
}

#[derive(Debug, Deserialize)]
struct OpenedFields {
    tenant_id: Option<String>,
    group_id: Option<String>,
}

fn metadata_text(stored: &StoredEvent, key: &str) -> Option<String> {
    stored.metadata.str_field(key)
}

#[async_trait::async_trait]
impl Projection for GroupConversations {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handles(&self, event: &StoredEvent) -> bool {
        matches!(
            (event.aggregate_type.as_str(), event.event_type.as_str()),
            ("conversation", "ConversationOpened") | ("group", "GroupLeft")
        )
    }

    async fn apply(&self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        for stored in events {
            match (stored.aggregate_type.as_str(), stored.event_type.as_str()) {
                ("conversation", "ConversationOpened") => {
                    let opened: Opened = stored.payload.parse().map_err(|e| ProjectionError::Unreadable {
                        aggregate_type: stored.aggregate_type.clone(),
                        aggregate_id: stored.aggregate_id.clone(),
                        sequence: stored.sequence,
                        reason: e.to_string(),
                    })?;
                    let (Some(tenant), Some(group)) =
                        (opened.fields.tenant_id.as_deref(), opened.fields.group_id.as_deref())
                    else {
                        continue;
                    };
                    let sql = "INSERT INTO group_conversations (tenant_id, group_id, conversation_id)
                               VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
                    on_tx!(tx, |conn| {
                        sqlx::query(sql)
                            .bind(tenant)
                            .bind(group)
                            .bind(&stored.aggregate_id)
                            .execute(conn)
                            .await?;
                    });
                }
                ("group", "GroupLeft") => {
                    let (Some(tenant), Some(event_id)) =
                        (metadata_text(stored, "tenant_id"), metadata_text(stored, "event_id"))
                    else {
                        tracing::warn!(group = %stored.aggregate_id, "GroupLeft without tenant or event id");
                        continue;
                    };
                    let sql = "INSERT INTO group_leaves (tenant_id, group_id, leave_event_id, correlation_id, position)
                               VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
                    let correlation = metadata_text(stored, "correlation_id");
                    on_tx!(tx, |conn| {
                        sqlx::query(sql)
                            .bind(&tenant)
                            .bind(&stored.aggregate_id)
                            .bind(&event_id)
                            .bind(&correlation)
                            .bind(stored.position.unwrap_or_default())
                            .execute(conn)
                            .await?;
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn tables(&self) -> &'static [&'static str] {
        &["group_conversations", "group_leaves"]
    }

    /// Clears the mapping only: the leaves are the process manager's own record of what it has
    /// done, which a rebuild must not forget.
    async fn clear(&self, tx: &mut Tx<'_>) -> Result<(), ProjectionError> {
        Ok(tx.empty(&["group_conversations"]).await?)
    }
}

/// A leave still to act on.
#[derive(Debug, Clone)]
struct PendingLeave {
    tenant_id: String,
    group_id: String,
    leave_event_id: String,
    correlation_id: Option<String>,
}

async fn pending_leaves(store: &Store) -> Result<Vec<PendingLeave>, StoreError> {
    let sql = "SELECT tenant_id, group_id, leave_event_id, correlation_id FROM group_leaves
               WHERE NOT done ORDER BY position LIMIT $1";
    let rows = colloquy_infra::on_pool!(store, |pool| {
        let rows = sqlx::query(sql).bind(LEAVES_PER_ROUND).fetch_all(pool).await?;
        rows.iter()
            .map(|row| -> Result<PendingLeave, sqlx::Error> {
                Ok(PendingLeave {
                    tenant_id: row.try_get("tenant_id")?,
                    group_id: row.try_get("group_id")?,
                    leave_event_id: row.try_get("leave_event_id")?,
                    correlation_id: row.try_get("correlation_id")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    });
    Ok(rows)
}

async fn conversations_of(store: &Store, leave: &PendingLeave) -> Result<Vec<String>, StoreError> {
    let sql = "SELECT conversation_id FROM group_conversations WHERE tenant_id = $1 AND group_id = $2";
    let ids = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query_scalar::<_, String>(sql)
            .bind(&leave.tenant_id)
            .bind(&leave.group_id)
            .fetch_all(pool)
            .await?
    });
    Ok(ids)
}

async fn mark_done(store: &Store, leave: &PendingLeave) -> Result<(), StoreError> {
    let sql = "UPDATE group_leaves SET done = true WHERE leave_event_id = $1";
    let mut tx = store.begin(File::ReadModels, Durability::Durable).await?;
    on_tx!(&mut *tx, |conn| {
        sqlx::query(sql).bind(&leave.leave_event_id).execute(conn).await?;
    });
    tx.commit().await?;
    Ok(())
}

/// Closes the open and pending conversations of one left group. Answers how many it closed, or
/// `None` when a command could not reach the store, so the leave stays pending for the next round.
async fn act_on(
    store: &Store,
    conversations: &Repository<Conversation>,
    leave: &PendingLeave,
) -> Result<Option<usize>, StoreError> {
    let tenant = TenantId::parse(&leave.tenant_id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let origin = Origin {
        tenant,
        actor: Actor { kind: ActorKind::System, id: CLOSER_ACTOR.into() },
        via_token: None,
        request_id: None,
        correlation_id: leave.correlation_id.as_deref().and_then(|id| Uuid::parse_str(id).ok()),
        causation_id: Uuid::parse_str(&leave.leave_event_id).ok(),
    };
    let mut closed = 0;
    for conversation_id in conversations_of(store, leave).await? {
        let outcome = conversations
            .execute(
                &conversation_id,
                ConversationCommand::CloseForLeftGroup,
                Intent::Update,
                None,
                &origin,
                |_, _| (),
            )
            .await;
        match outcome {
            Ok(committed) => closed += usize::from(!committed.events.is_empty()),
            Err(CommandError::Store(error)) => {
                tracing::warn!(%conversation_id, %error, "store unavailable while closing for a left group");
                return Ok(None);
            }
            // Gone, deleted, or not a group conversation any more: nothing to close.
            Err(CommandError::NotFound | CommandError::Rejected(ConversationError::Deleted(_))) => {}
            Err(other) => {
                tracing::warn!(%conversation_id, group = %leave.group_id, error = %other, "could not close for a left group");
            }
        }
    }
    Ok(Some(closed))
}

/// Acts on pending leaves until `stop`: the second half of the process manager.
pub async fn run_closer(
    store: Store,
    conversations: Arc<Repository<Conversation>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        for leave in pending_leaves(&store).await? {
            let Some(closed) = act_on(&store, &conversations, &leave).await? else { break };
            mark_done(&store, &leave).await?;
            tracing::info!(group = %leave.group_id, closed, "closed the conversations of a left group");
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}
