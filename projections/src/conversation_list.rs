//! The `conversation_list` read model: one row per conversation with what a list screen shows,
//! kept by folding Conversation events. The fold (`ConversationRow::apply`) is pure; the rest of
//! this file loads and stores rows and answers list queries.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use colloquy_domain::conversation::{ConversationEvent, Visibility};
use colloquy_infra::{Store, StoreError, StoredEvent};

use crate::runtime::{Projection, ProjectionError, Tx};

/// The projection's name.
pub const NAME: &str = "conversation_list";

/// One conversation as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationRow {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Display number.
    pub number: i64,
    /// Contact.
    pub contact_id: String,
    /// Channel.
    pub channel: String,
    /// Inbox.
    pub inbox_id: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Status.
    pub status: String,
    /// End of a timed snooze.
    pub snoozed_until: Option<DateTime<Utc>>,
    /// Priority.
    pub priority: String,
    /// Assigned user.
    pub assignee_id: Option<String>,
    /// Assigned team.
    pub team_id: Option<String>,
    /// Labels, sorted.
    pub labels: Vec<String>,
    /// Starred.
    pub starred: bool,
    /// Deleted.
    pub deleted: bool,
    /// Messages of every visibility.
    pub message_count: i64,
    /// Preview of the latest public message.
    pub last_message_preview: Option<String>,
    /// Time of the latest public message.
    pub last_message_at: Option<DateTime<Utc>>,
    /// Opened at.
    pub created_at: DateTime<Utc>,
    /// Latest message, status or assignment change.
    pub last_activity_at: DateTime<Utc>,
    /// The stream version the row reflects.
    pub version: i64,
}

fn name_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl ConversationRow {
    /// Folds one event into the row (`None` before the conversation is opened).
    pub fn apply(
        row: Option<Self>,
        event: &ConversationEvent,
        aggregate_id: &str,
        sequence: i64,
    ) -> Option<Self> {
        if let ConversationEvent::ConversationOpened {
            tenant_id,
            number,
            contact_id,
            channel,
            inbox_id,
            subject,
            priority,
            status,
            labels,
            opened_at,
            ..
        } = event
        {
            let mut labels = labels.clone();
            labels.sort();
            return Some(Self {
                id: aggregate_id.to_owned(),
                tenant_id: tenant_id.to_string(),
                number: i64::try_from(*number).unwrap_or(i64::MAX),
                contact_id: contact_id.to_string(),
                channel: channel.as_str().to_owned(),
                inbox_id: inbox_id.clone(),
                subject: subject.clone(),
                status: status.as_str().to_owned(),
                snoozed_until: None,
                priority: name_of(priority),
                assignee_id: None,
                team_id: None,
                labels,
                starred: false,
                deleted: false,
                message_count: 0,
                last_message_preview: None,
                last_message_at: None,
                created_at: *opened_at,
                last_activity_at: *opened_at,
                version: sequence,
            });
        }
        let mut row = row?;
        row.version = sequence;
        match event {
            ConversationEvent::ConversationOpened { .. } => {}
            ConversationEvent::SubjectChanged { subject, .. } => row.subject = subject.clone(),
            ConversationEvent::PriorityChanged { to, .. } => row.priority = name_of(to),
            ConversationEvent::ConversationStarred { .. } => row.starred = true,
            ConversationEvent::ConversationUnstarred { .. } => row.starred = false,
            ConversationEvent::StatusChanged { to, snoozed_until, changed_at, .. } => {
                row.status = to.as_str().to_owned();
                row.snoozed_until = *snoozed_until;
                row.last_activity_at = *changed_at;
            }
            ConversationEvent::ConversationAssigned { assignee_id, team_id, assigned_at, .. } => {
                row.assignee_id = assignee_id.clone();
                row.team_id = team_id.clone();
                row.last_activity_at = *assigned_at;
            }
            ConversationEvent::ConversationUnassigned { unassigned_at, .. } => {
                row.assignee_id = None;
                row.team_id = None;
                row.last_activity_at = *unassigned_at;
            }
            ConversationEvent::LabelsAdded { labels, .. } => {
                row.labels.extend(labels.iter().cloned());
                row.labels.sort();
                row.labels.dedup();
            }
            ConversationEvent::LabelsRemoved { labels, .. } => row.labels.retain(|l| !labels.contains(l)),
            ConversationEvent::ConversationDeleted { .. } => row.deleted = true,
            ConversationEvent::MessageAdded { visibility, content, created_at, .. } => {
                row.message_count += 1;
                if *visibility == Visibility::Public {
                    row.last_message_preview = Some(content.preview());
                    row.last_message_at = Some(*created_at);
                }
                row.last_activity_at = *created_at;
            }
            ConversationEvent::CustomFieldsChanged { .. }
            | ConversationEvent::ConversationRead { .. }
            | ConversationEvent::MessageEdited { .. }
            | ConversationEvent::MessageVisibilityChanged { .. }
            | ConversationEvent::ReactionAdded { .. }
            | ConversationEvent::ReactionRemoved { .. }
            | ConversationEvent::DeliveryStatusChanged { .. } => {}
        }
        Some(row)
    }
}

const COLUMNS: &str = "conversation_id, tenant_id, number, contact_id, channel, inbox_id, subject, status, snoozed_until, \
     priority, assignee_id, team_id, labels, starred, deleted, message_count, last_message_preview, last_message_at, \
     created_at, last_activity_at, version";

fn upsert_sql() -> String {
    let updates: Vec<String> =
        COLUMNS.split(", ").skip(1).map(|c| format!("{c} = excluded.{c}", c = c.trim())).collect();
    let params: Vec<String> = (1..=21).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO conversation_list ({COLUMNS}) VALUES ({}) ON CONFLICT (conversation_id) DO UPDATE SET {}",
        params.join(", "),
        updates.join(", ")
    )
}

macro_rules! bind_row {
    ($query:expr, $row:expr) => {{
        let row = $row;
        $query
            .bind(&row.id)
            .bind(&row.tenant_id)
            .bind(row.number)
            .bind(&row.contact_id)
            .bind(&row.channel)
            .bind(&row.inbox_id)
            .bind(&row.subject)
            .bind(&row.status)
            .bind(row.snoozed_until)
            .bind(&row.priority)
            .bind(&row.assignee_id)
            .bind(&row.team_id)
            .bind(serde_json::to_string(&row.labels).unwrap_or_else(|_| "[]".into()))
            .bind(row.starred)
            .bind(row.deleted)
            .bind(row.message_count)
            .bind(&row.last_message_preview)
            .bind(row.last_message_at)
            .bind(row.created_at)
            .bind(row.last_activity_at)
            .bind(row.version)
    }};
}

fn decode<R>(row: &R) -> Result<ConversationRow, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> DateTime<Utc>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<DateTime<Utc>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let labels: String = row.try_get("labels")?;
    Ok(ConversationRow {
        id: row.try_get("conversation_id")?,
        tenant_id: row.try_get("tenant_id")?,
        number: row.try_get("number")?,
        contact_id: row.try_get("contact_id")?,
        channel: row.try_get("channel")?,
        inbox_id: row.try_get("inbox_id")?,
        subject: row.try_get("subject")?,
        status: row.try_get("status")?,
        snoozed_until: row.try_get("snoozed_until")?,
        priority: row.try_get("priority")?,
        assignee_id: row.try_get("assignee_id")?,
        team_id: row.try_get("team_id")?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        starred: row.try_get("starred")?,
        deleted: row.try_get("deleted")?,
        message_count: row.try_get("message_count")?,
        last_message_preview: row.try_get("last_message_preview")?,
        last_message_at: row.try_get("last_message_at")?,
        created_at: row.try_get("created_at")?,
        last_activity_at: row.try_get("last_activity_at")?,
        version: row.try_get("version")?,
    })
}

/// The projection.
#[derive(Debug, Default)]
pub struct ConversationList;

#[async_trait::async_trait]
impl Projection for ConversationList {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn apply(&self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        // Each touched row is loaded once, folded through the batch, and written once.
        let mut rows: HashMap<String, Option<ConversationRow>> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for stored in events.iter().filter(|e| e.aggregate_type == "conversation") {
            let event: ConversationEvent =
                serde_json::from_value(stored.payload.clone()).map_err(|e| ProjectionError::Unreadable {
                    aggregate_type: stored.aggregate_type.clone(),
                    aggregate_id: stored.aggregate_id.clone(),
                    sequence: stored.sequence,
                    reason: e.to_string(),
                })?;
            if !rows.contains_key(&stored.aggregate_id) {
                let loaded = load(tx, &stored.aggregate_id).await?;
                rows.insert(stored.aggregate_id.clone(), loaded);
                order.push(stored.aggregate_id.clone());
            }
            let slot = rows.get_mut(&stored.aggregate_id).map(Option::take).unwrap_or_default();
            let folded = ConversationRow::apply(slot, &event, &stored.aggregate_id, stored.sequence);
            rows.insert(stored.aggregate_id.clone(), folded);
        }
        let sql = upsert_sql();
        for id in order {
            let Some(Some(row)) = rows.get(&id) else { continue };
            match tx {
                Tx::Postgres(tx) => {
                    bind_row!(sqlx::query(&sql), row).execute(&mut **tx).await?;
                }
                Tx::Sqlite(tx) => {
                    bind_row!(sqlx::query(&sql), row).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }

    async fn clear(&self, tx: &mut Tx<'_>) -> Result<(), ProjectionError> {
        match tx {
            Tx::Postgres(tx) => sqlx::query("DELETE FROM conversation_list").execute(&mut **tx).await?,
            Tx::Sqlite(tx) => {
                sqlx::query("DELETE FROM conversation_list").execute(&mut **tx).await?;
                return Ok(());
            }
        };
        Ok(())
    }
}

async fn load(tx: &mut Tx<'_>, id: &str) -> Result<Option<ConversationRow>, ProjectionError> {
    let sql = format!("SELECT {COLUMNS} FROM conversation_list WHERE conversation_id = $1");
    let row = match tx {
        Tx::Postgres(tx) => sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await?.map(|r| decode(&r)),
        Tx::Sqlite(tx) => sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await?.map(|r| decode(&r)),
    };
    Ok(row.transpose()?)
}

/// A list request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only these statuses (any, when empty).
    pub statuses: Vec<String>,
    /// Include deleted conversations.
    pub include_deleted: bool,
    /// Rows after this (last_activity_at, id) in the order, newest first.
    pub after: Option<(DateTime<Utc>, String)>,
    /// At most this many.
    pub limit: i64,
}

/// A tenant's conversations, newest activity first.
pub async fn list(
    store: &Store,
    tenant: &str,
    query: &ListQuery,
) -> Result<Vec<ConversationRow>, StoreError> {
    let statuses = serde_json::to_string(&query.statuses).unwrap_or_else(|_| "[]".into());
    let (after_time, after_id) = query.after.clone().map_or((None, None), |(t, id)| (Some(t), Some(id)));
    // Both dialects read the status list from one JSON parameter, so the statement's shape
    // (and its cached plan) does not depend on how many statuses are asked for.
    let status_filter = "AND ($2 = '[]' OR status IN (SELECT value FROM json_each($2)))";
    let status_filter_pg = "AND ($2::text = '[]' OR status IN (SELECT jsonb_array_elements_text($2::jsonb)))";
    let deleted_filter = if query.include_deleted { "" } else { "AND NOT deleted" };
    let keyset = "AND ($3 IS NULL OR (last_activity_at, conversation_id) < ($3, $4))";
    // Written into the statement: a bound LIMIT makes PostgreSQL's generic plan guess badly.
    let limit = query.limit.clamp(1, 1_000);
    let sql = if store.postgres_pool().is_some() {
        format!(
            "SELECT {COLUMNS} FROM conversation_list WHERE tenant_id = $1 {status_filter_pg} {deleted_filter}
               AND ($3::timestamptz IS NULL OR (last_activity_at, conversation_id) < ($3::timestamptz, $4::text))
             ORDER BY last_activity_at DESC, conversation_id DESC LIMIT {limit}"
        )
    } else {
        format!(
            "SELECT {COLUMNS} FROM conversation_list WHERE tenant_id = $1 {status_filter} {deleted_filter} {keyset}
             ORDER BY last_activity_at DESC, conversation_id DESC LIMIT {limit}"
        )
    };
    let rows = colloquy_infra::on_pool!(store, |pool| sqlx::query(&sql)
        .persistent(false)
        .bind(tenant)
        .bind(&statuses)
        .bind(after_time)
        .bind(after_id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(decode)
        .collect::<Result<Vec<_>, _>>()?);
    Ok(rows)
}

/// Every row, ordered by id: for comparing the read model with a rebuild.
pub async fn dump(store: &Store) -> Result<Vec<ConversationRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM conversation_list ORDER BY conversation_id");
    let rows = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query(&sql).fetch_all(pool).await?.iter().map(decode).collect::<Result<Vec<_>, _>>()?
    });
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::Map;

    use colloquy_domain::conversation::{
        GroupType, MessageContent, MessageType, Priority, Sender, SenderKind, Status, StatusReason,
    };
    use colloquy_domain::{Channel, ContactId, ConversationId, MessageId, TenantId};

    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 9, minute, 0).single().expect("valid time")
    }

    fn opened() -> ConversationEvent {
        ConversationEvent::ConversationOpened {
            conversation_id: ConversationId::new_v7(),
            tenant_id: TenantId::parse("acme").expect("valid"),
            number: 4,
            contact_id: ContactId::new_v7(),
            channel: Channel::Sms,
            inbox_id: None,
            subject: Some("Hi".into()),
            priority: Priority::High,
            status: Status::Open,
            custom_fields: Map::new(),
            labels: vec!["b".into(), "a".into()],
            group_type: GroupType::Individual,
            opened_at: at(0),
        }
    }

    fn message(visibility: Visibility, text: &str, minute: u32) -> ConversationEvent {
        ConversationEvent::MessageAdded {
            message_id: MessageId::new_v7(),
            sender: Sender { kind: SenderKind::User, id: Some("u".into()) },
            visibility,
            content: MessageContent {
                message_type: MessageType::Text,
                text: Some(text.into()),
                ..MessageContent::default()
            },
            response_time_ms: None,
            created_at: at(minute),
        }
    }

    fn fold(events: &[ConversationEvent]) -> Option<ConversationRow> {
        events
            .iter()
            .enumerate()
            .fold(None, |row, (i, event)| ConversationRow::apply(row, event, "c-1", i as i64 + 1))
    }

    #[test]
    fn opening_makes_a_row_with_sorted_labels() {
        let row = fold(&[opened()]).expect("a row");
        assert_eq!(row.labels, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(row.priority, "high");
        assert_eq!(row.status, "open");
        assert_eq!(row.version, 1);
    }

    #[test]
    fn internal_notes_count_but_do_not_change_the_preview() {
        let row = fold(&[
            opened(),
            message(Visibility::Public, "hello", 1),
            message(Visibility::Internal, "note", 2),
        ])
        .expect("a row");
        assert_eq!(row.message_count, 2);
        assert_eq!(row.last_message_preview.as_deref(), Some("hello"));
        assert_eq!(row.last_message_at, Some(at(1)));
        assert_eq!(row.last_activity_at, at(2));
    }

    #[test]
    fn status_changes_move_activity_and_events_before_opening_make_no_row() {
        let row = fold(&[
            opened(),
            ConversationEvent::StatusChanged {
                from: Status::Open,
                to: Status::Snoozed,
                snoozed_until: Some(at(30)),
                reason: StatusReason::Requested,
                changed_at: at(5),
            },
        ])
        .expect("a row");
        assert_eq!(row.status, "snoozed");
        assert_eq!(row.snoozed_until, Some(at(30)));
        assert_eq!(row.last_activity_at, at(5));
        assert_eq!(fold(&[message(Visibility::Public, "orphan", 1)]), None);
    }
}
