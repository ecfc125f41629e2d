//! The `group_conversations` process manager: when the inbox leaves (or is removed from) a group,
//! every open or pending conversation of that group is closed, each closing event carrying the
//! leave event's id as its causation id and the leave's correlation id.
//!
//! Its two halves run on the process managers' runtime (`processes.rs`):
//! - [`GroupConversations`], the projection half, records from the ordered log which conversations
//!   each group has (`group_conversations`) and a job for each leave, with its checkpoint. The
//!   mapping comes from the same log as the leave, so a conversation opened just before a leave
//!   is always known when the leave is acted on.
//! - [`GroupLeaveCloser`], the actor half, sends `CloseForLeftGroup` to each of the group's
//!   conversations. The command is idempotent (a conversation that is no longer open or pending
//!   records nothing), so a job acted on twice closes nothing twice; done jobs are kept, so a
//!   rebuild does not close conversations that agents reopened since.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use colloquy_domain::{Conversation, ConversationCommand, ConversationError, TenantId};
use colloquy_infra::{CommandError, Intent, Origin, Repository, Store, StoreError, StoredEvent};

use crate::on_tx;
use crate::processes::{self, ActError, Job, NewJob, Process};
use crate::runtime::{Projection, ProjectionError, Tx};

/// The projection's (and its checkpoint's, and its jobs') name.
pub const NAME: &str = "group_conversations";

/// The actor recorded on the closing events.
pub const CLOSER_ACTOR: &str = "group-leave";

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
                    let opened: Opened = stored.decode()?;
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
                    let job = json!({ "group_id": stored.aggregate_id });
                    match NewJob::caused_by(stored, job) {
                        Some(job) => processes::record(tx, NAME, &job).await?,
                        None => {
                            tracing::warn!(group = %stored.aggregate_id, "GroupLeft without tenant or event id")
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn tables(&self) -> &'static [&'static str] {
        &["group_conversations"]
    }
}

/// The actor half: closes the open and pending conversations of each left group, through the
/// process's shared repository of conversations.
#[derive(Debug, Clone)]
pub struct GroupLeaveCloser {
    store: Store,
    conversations: Arc<Repository<Conversation>>,
}

impl GroupLeaveCloser {
    /// The closer, commanding conversations through `conversations` (the one the API uses).
    pub fn new(store: Store, conversations: Arc<Repository<Conversation>>) -> Self {
        Self { store, conversations }
    }
}

async fn conversations_of(store: &Store, tenant: &TenantId, group: &str) -> Result<Vec<String>, StoreError> {
    let sql = "SELECT conversation_id FROM group_conversations WHERE tenant_id = $1 AND group_id = $2";
    let ids = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query_scalar::<_, String>(sql).bind(tenant.as_str()).bind(group).fetch_all(pool).await?
    });
    Ok(ids)
}

#[async_trait::async_trait]
impl Process for GroupLeaveCloser {
    fn name(&self) -> &'static str {
        NAME
    }

    fn actor_id(&self) -> &'static str {
        CLOSER_ACTOR
    }

    /// Closes the conversations of the job's group; one that is gone, deleted or no longer open
    /// is left as it is. A store that cannot be reached fails the job, to be tried again.
    async fn act(&self, job: &Job, origin: &Origin) -> Result<(), ActError> {
        let group = job.job["group_id"].as_str().ok_or_else(|| ActError("a job without group_id".into()))?;
        let mut closed = 0;
        for conversation_id in conversations_of(&self.store, &job.tenant, group).await? {
            let outcome = self
                .conversations
                .execute(
                    &conversation_id,
                    ConversationCommand::CloseForLeftGroup,
                    Intent::Update,
                    None,
                    origin,
                    |_, _| (),
                )
                .await;
            match outcome {
                Ok(committed) => closed += usize::from(!committed.events.is_empty()),
                Err(CommandError::Store(error)) => return Err(ActError(error.to_string())),
                // Gone, deleted, or not a group conversation any more: nothing to close.
                Err(CommandError::NotFound | CommandError::Rejected(ConversationError::Deleted(_))) => {}
                Err(other) => {
                    tracing::warn!(%conversation_id, group, error = %other, "could not close for a left group");
                }
            }
        }
        tracing::info!(group, closed, "closed the conversations of a left group");
        Ok(())
    }
}
