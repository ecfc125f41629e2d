//! `/v1/conversations`: open, read, update, delete a conversation; change its status,
//! assignment, labels and read receipts; read its history.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use colloquy_domain::contact::ContactStatus;
use colloquy_domain::conversation::{ConversationPatch, NewConversation, Priority, Status};
use colloquy_domain::{Channel, Contact, Conversation, ConversationCommand, ConversationId, Group, GroupId};
use colloquy_infra::{Committed, Intent};

use colloquy_projections::conversation_list;

use crate::extract::{etag, require, Auth, IfMatch, Json, Path, Query};
use crate::instant::Instant;
use crate::paging::PageParams;
use crate::point_in_time::{not_yet, PointInTime};
use crate::problem::{command_failed, ApiError};
use crate::routes::contacts::stream_events;
use crate::routes::Ask;
use crate::routes::{origin, Versioned};
use crate::serde_util::double_option;
use crate::state::AppState;
use crate::views::{ConversationView, EventView, Page};

/// The scope of the commands here.
const WRITE: &str = "conversations:write";

/// Body of `POST /v1/conversations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"contact_id": "0192f3c4-5a6b-7c8d-9e0f-1a2b3c4d5e6f", "channel": "whatsapp", "inbox_id": "support", "subject": "Order 4711", "priority": "high", "labels": ["billing"]}))]
#[serde(deny_unknown_fields)]
pub struct OpenConversation {
    id: Option<Uuid>,
    contact_id: Uuid,
    channel: Channel,
    inbox_id: Option<String>,
    subject: Option<String>,
    priority: Option<Priority>,
    status: Option<Status>,
    #[serde(default)]
    #[schema(value_type = Object)]
    custom_fields: Map<String, Value>,
    #[serde(
        default,
        deserialize_with = "crate::bounded::at_most::<_, _, { colloquy_domain::validate::MAX_LABELS }>"
    )]
    #[schema(max_items = 50)]
    labels: Vec<String>,
    /// The group chat this conversation is in (its `group_type` is then `group`); the group must
    /// exist and the inbox must not have left it.
    group_id: Option<Uuid>,
}

/// Body of `PATCH /v1/conversations/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"subject": "Order 4711: refund", "starred": true}))]
#[serde(deny_unknown_fields)]
pub struct PatchConversation {
    #[serde(default, deserialize_with = "double_option")]
    subject: Option<Option<String>>,
    priority: Option<Priority>,
    #[schema(value_type = Option<Object>)]
    custom_fields: Option<Map<String, Value>>,
    starred: Option<bool>,
}

/// Body of `POST /v1/conversations/{id}/status`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"status": "snoozed", "snoozed_until": "2026-12-01T09:00:00Z"}))]
#[serde(deny_unknown_fields)]
pub struct ChangeStatus {
    status: Status,
    snoozed_until: Option<Instant>,
}

/// Body of `POST /v1/conversations/{id}/assignment`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"assignee_id": "agent-42", "team_id": "billing"}))]
#[serde(deny_unknown_fields)]
pub struct Assign {
    assignee_id: Option<String>,
    team_id: Option<String>,
}

/// Body of `POST /v1/conversations/{id}/labels`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"add": ["refund"], "remove": ["billing"]}))]
#[serde(deny_unknown_fields)]
pub struct ChangeLabels {
    #[serde(
        default,
        deserialize_with = "crate::bounded::at_most::<_, _, { colloquy_domain::validate::MAX_LABELS }>"
    )]
    #[schema(max_items = 50)]
    add: Vec<String>,
    #[serde(
        default,
        deserialize_with = "crate::bounded::at_most::<_, _, { colloquy_domain::validate::MAX_LABELS }>"
    )]
    #[schema(max_items = 50)]
    remove: Vec<String>,
}

/// Body of `POST /v1/conversations/{id}/read`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"user_id": "agent-42"}))]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    user_id: String,
}

/// Runs a command on an existing conversation of the caller's tenant and answers with its view.
pub(crate) async fn run<V>(
    state: &AppState,
    principal: &colloquy_infra::tokens::Principal,
    headers: &HeaderMap,
    conversation_id: Uuid,
    expected: Option<usize>,
    command: ConversationCommand,
    view: impl FnOnce(&Conversation, usize) -> V,
) -> Result<(Committed<Conversation, V>, Option<i64>), ApiError> {
    let ask = Ask {
        scope: WRITE,
        kind: "conversation",
        id: conversation_id,
        intent: Intent::Update,
        expected,
        command,
    };
    let committed = crate::routes::command(state.conversations(), principal, headers, ask, view).await?;
    let position = committed.position;
    Ok((committed, position))
}

async fn run_for_view(
    state: &AppState,
    principal: &colloquy_infra::tokens::Principal,
    headers: &HeaderMap,
    conversation_id: Uuid,
    expected: Option<usize>,
    command: ConversationCommand,
) -> Result<Versioned<ConversationView>, ApiError> {
    let (committed, position) =
        run(state, principal, headers, conversation_id, expected, command, ConversationView::of).await?;
    Ok(Versioned::ok(committed.version, committed.view).at(position))
}

/// `POST /v1/conversations`
#[utoipa::path(
    post,
    path = "/conversations",
    tag = "conversations",
    summary = "Open a conversation",
    request_body = OpenConversation,
    responses(
        (status = 201, description = "Opened; `Location` names it, `ETag` is its version.", body = ConversationView),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn open(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Json(body): Json<OpenConversation>,
) -> Result<Versioned<ConversationView>, ApiError> {
    require(&principal, "conversations:write")?;
    let origin = origin(&principal, &headers)?;
    let contact_status = state
        .contacts()
        .read(&principal.tenant, &body.contact_id.to_string(), |contact: &Contact, _| contact.status)
        .await?;
    match contact_status {
        None => {
            return Err(ApiError::refused(format!(
                "contact_id {} names no contact of this tenant",
                body.contact_id
            )))
        }
        Some(ContactStatus::Deleted) => {
            return Err(ApiError::refused(format!("contact {} is deleted", body.contact_id)))
        }
        Some(_) => {}
    }
    if let Some(group_id) = body.group_id {
        let left = state
            .groups()
            .read(&principal.tenant, &group_id.to_string(), |group: &Group, _| group.left)
            .await?;
        match left {
            None => {
                return Err(ApiError::refused(format!("group_id {group_id} names no group of this tenant")))
            }
            Some(true) => {
                return Err(ApiError::refused(format!(
                    "the inbox has left group {group_id}; it takes no new conversations"
                )))
            }
            Some(false) => {}
        }
    }
    let conversation_id = body.id.map_or_else(ConversationId::new_v7, ConversationId);
    let number = state.store().next_counter(&principal.tenant, "conversation_number").await?;
    let command = ConversationCommand::OpenConversation {
        conversation_id,
        tenant_id: principal.tenant.clone(),
        number,
        conversation: NewConversation {
            contact_id: Some(colloquy_domain::ContactId(body.contact_id)),
            channel: Some(body.channel),
            inbox_id: body.inbox_id,
            subject: body.subject,
            priority: body.priority,
            status: body.status,
            custom_fields: body.custom_fields,
            labels: body.labels,
            group_id: body.group_id.map(GroupId),
        },
    };
    let committed = state
        .conversations()
        .execute(&conversation_id.to_string(), command, Intent::Create, None, &origin, ConversationView::of)
        .await
        .map_err(|e| command_failed(e, format!("conversation {conversation_id}")))?;
    let position = committed.position;
    Ok(Versioned::created(committed.version, format!("/v1/conversations/{conversation_id}"), committed.view)
        .at(position))
}

/// `GET /v1/conversations/{id}`, served from the inbox read model; a deleted conversation
/// answers 410 (its events stay readable). When the row is behind the stream's latest event (one
/// index-only lookup), written by any process, or not there yet, the answer comes from the
/// aggregate instead, so a client always reads every acknowledged write.
#[utoipa::path(
    get,
    path = "/conversations/{id}",
    tag = "conversations",
    summary = "Read a conversation",
    description = "With `as_of` or `at_position`, the conversation as it stood then, folded from its own events; \
        `Colloquy-Position` names the last one (its messages then: `GET .../messages` with the same parameter).",
    params(("id" = Uuid, Path, description = "The conversation's id."), PointInTime),
    responses(
        (status = 200, description = "The conversation; `ETag` is its version.", body = ConversationView),
        (status = 410, response = crate::openapi::Gone)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(conversation_id): Path<Uuid>,
    Query(point): Query<PointInTime>,
) -> Result<Versioned<ConversationView>, ApiError> {
    require(&principal, "conversations:read")?;
    let id = conversation_id.to_string();
    let gone = || {
        ApiError::gone(format!(
            "conversation {conversation_id} was deleted; its history stays at /v1/conversations/{conversation_id}/events"
        ))
    };
    if let Some(until) = point.until()? {
        let found = state
            .conversations()
            .read_at(&principal.tenant, &id, until, |conversation: &Conversation, version| {
                (conversation.deleted, version, ConversationView::of(conversation, version))
            })
            .await?;
        return match found {
            None => Err(not_yet(&format!("conversation {conversation_id}"))),
            Some(((true, _, _), _)) => Err(gone()),
            Some(((false, version, view), position)) => Ok(Versioned::ok(version, view).at(Some(position))),
        };
    }
    let row = conversation_list::get(state.store(), principal.tenant.as_str(), &id).await?;
    // The row answers when it holds every event of the stream, whichever process wrote them;
    // otherwise the aggregate does, so a read after any acknowledged write sees it.
    let current = match &row {
        Some(_) => state.store().current_version(&principal.tenant, "conversation", &id).await?,
        None => 0,
    };
    let contact = match row {
        Some(row) if row.version >= current => {
            if row.deleted {
                return Err(gone());
            }
            let version = usize::try_from(row.version).unwrap_or(0);
            return Ok(Versioned::ok(version, ConversationView::from_row(row)));
        }
        Some(row) => Some(row.contact),
        None => None,
    };
    let found = state
        .conversations()
        .read(&principal.tenant, &id, |conversation: &Conversation, version| {
            (conversation.deleted, version, ConversationView::of(conversation, version))
        })
        .await?;
    match found {
        None => Err(ApiError::not_found(format!("conversation {conversation_id}"))),
        Some((true, _, _)) => Err(gone()),
        Some((false, version, view)) => Ok(Versioned::ok(
            version,
            if let Some(contact) = contact { view.with_contact(contact) } else { view },
        )),
    }
}

/// `PATCH /v1/conversations/{id}`
#[utoipa::path(
    patch,
    path = "/conversations/{id}",
    tag = "conversations",
    summary = "Update a conversation",
    description = "Absent fields stay; `null` clears the subject.",
    params(("id" = Uuid, Path, description = "The conversation's id.")),
    request_body = PatchConversation,
    responses(
        (status = 200, description = "The conversation as changed; `ETag` is its version, `Colloquy-Position` its last event's global position.", body = ConversationView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(conversation_id): Path<Uuid>,
    Json(body): Json<PatchConversation>,
) -> Result<Versioned<ConversationView>, ApiError> {
    let command = ConversationCommand::UpdateConversation(ConversationPatch {
        subject: body.subject,
        priority: body.priority,
        custom_fields: body.custom_fields,
        starred: body.starred,
    });
    run_for_view(&state, &principal, &headers, conversation_id, expected, command).await
}

/// `DELETE /v1/conversations/{id}`: 204; the stream stays and later commands are refused.
#[utoipa::path(
    delete,
    path = "/conversations/{id}",
    tag = "conversations",
    summary = "Delete a conversation",
    params(("id" = Uuid, Path, description = "The conversation's id.")),
    responses(
        (status = 204, description = "Deleted; `ETag` is the final version. Its events stay readable; later commands are refused."),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(conversation_id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let command = ConversationCommand::DeleteConversation;
    let (committed, position) =
        run(&state, &principal, &headers, conversation_id, expected, command, |_, _| ()).await?;
    let mut response =
        (StatusCode::NO_CONTENT, [(axum::http::header::ETAG, etag(committed.version))]).into_response();
    if let Some(position) = position {
        response.headers_mut().insert(crate::routes::POSITION_HEADER, position.into());
    }
    Ok(response)
}

/// `POST /v1/conversations/{id}/status`
#[utoipa::path(
    post,
    path = "/conversations/{id}/status",
    tag = "conversations",
    summary = "Change the status",
    description = "Open, pending, snoozed (until a future time), bot or closed.",
    params(("id" = Uuid, Path, description = "The conversation's id.")),
    request_body = ChangeStatus,
    responses(
        (status = 200, description = "The conversation as changed; `ETag` is its version, `Colloquy-Position` its last event's global position.", body = ConversationView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn change_status(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(conversation_id): Path<Uuid>,
    Json(body): Json<ChangeStatus>,
) -> Result<Versioned<ConversationView>, ApiError> {
    let command = ConversationCommand::ChangeStatus {
        status: body.status,
        snoozed_until: body.snoozed_until.map(Into::into),
    };
    run_for_view(&state, &principal, &headers, conversation_id, expected, command).await
}

/// `POST /v1/conversations/{id}/assignment`
#[utoipa::path(
    post,
    path = "/conversations/{id}/assignment",
    tag = "conversations",
    summary = "Assign to an agent or team",
    params(("id" = Uuid, Path, description = "The conversation's id.")),
    request_body = Assign,
    responses(
        (status = 200, description = "The conversation as changed; `ETag` is its version, `Colloquy-Position` its last event's global position.", body = ConversationView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn assign(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(conversation_id): Path<Uuid>,
    Json(body): Json<Assign>,
) -> Result<Versioned<ConversationView>, ApiError> {
    let command = ConversationCommand::Assign { assignee_id: body.assignee_id, team_id: body.team_id };
    run_for_view(&state, &principal, &headers, conversation_id, expected, command).await
}

/// `DELETE /v1/conversations/{id}/assignment`
#[utoipa::path(
    delete,
    path = "/conversations/{id}/assignment",
    tag = "conversations",
    summary = "Unassign",
    params(("id" = Uuid, Path, description = "The conversation's id.")),
    responses(
        (status = 200, description = "The conversation as changed; `ETag` is its version, `Colloquy-Position` its last event's global position.", body = ConversationView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn unassign(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(conversation_id): Path<Uuid>,
) -> Result<Versioned<ConversationView>, ApiError> {
    run_for_view(&state, &principal, &headers, conversation_id, expected, ConversationCommand::Unassign).await
}

/// `POST /v1/conversations/{id}/labels`
#[utoipa::path(
    post,
    path = "/conversations/{id}/labels",
    tag = "conversations",
    summary = "Add and remove labels",
    params(("id" = Uuid, Path, description = "The conversation's id.")),
    request_body = ChangeLabels,
    responses(
        (status = 200, description = "The conversation as changed; `ETag` is its version, `Colloquy-Position` its last event's global position.", body = ConversationView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn change_labels(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(conversation_id): Path<Uuid>,
    Json(body): Json<ChangeLabels>,
) -> Result<Versioned<ConversationView>, ApiError> {
    let command = ConversationCommand::ChangeLabels { add: body.add, remove: body.remove };
    run_for_view(&state, &principal, &headers, conversation_id, expected, command).await
}

/// `POST /v1/conversations/{id}/read`
#[utoipa::path(
    post,
    path = "/conversations/{id}/read",
    tag = "conversations",
    summary = "Record a read receipt",
    description = "Marks every message up to now as read by `user_id`.",
    params(("id" = Uuid, Path, description = "The conversation's id.")),
    request_body = MarkRead,
    responses(
        (status = 200, description = "The conversation as changed; `ETag` is its version, `Colloquy-Position` its last event's global position.", body = ConversationView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn mark_read(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(conversation_id): Path<Uuid>,
    Json(body): Json<MarkRead>,
) -> Result<Versioned<ConversationView>, ApiError> {
    let command = ConversationCommand::MarkRead { user_id: body.user_id };
    run_for_view(&state, &principal, &headers, conversation_id, expected, command).await
}

/// `GET /v1/conversations/{id}/events`: the stream's events with their metadata, in order.
#[utoipa::path(
    get,
    path = "/conversations/{id}/events",
    tag = "conversations",
    summary = "Read a conversation's history",
    params(("id" = Uuid, Path, description = "The conversation's id."), PageParams),
    responses(
        (status = 200, description = "A page of the conversation's events with their metadata, in order.", body = Page<EventView>)
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(conversation_id): Path<Uuid>,
    Query(page): Query<PageParams>,
) -> Result<axum::Json<Page<EventView>>, ApiError> {
    require(&principal, "conversations:read")?;
    stream_events(&state, &principal, "conversation", conversation_id, &page).await.map(axum::Json)
}
