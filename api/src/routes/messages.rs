//! `/v1/conversations/{id}/messages`: add and list messages; edit, react to, hide a message;
//! record its delivery status.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use colloquy_domain::conversation::{
    Attachment, DeliveryError, DeliveryStatus, EmailEnvelope, Location, MessageContent, MessagePatch,
    MessageType, NewMessage, Reaction, Sender, Visibility,
};
use colloquy_domain::{Conversation, ConversationCommand, Group, MessageId};
use colloquy_infra::tokens::Principal;

use crate::extract::{require, Auth, IfMatch, Json, Path, Query};
use crate::paging::{cursor, PageParams};
use crate::point_in_time::PointInTime;
use crate::problem::ApiError;
use crate::routes::conversations::run;
use crate::routes::Versioned;
use crate::state::AppState;
use crate::views::{MessageView, Page};

/// Body of `POST /v1/conversations/{id}/messages`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"type": "text", "sender": {"kind": "user", "id": "agent-42"}, "text": "Your refund is on its way."}))]
#[serde(deny_unknown_fields)]
pub struct AddMessage {
    id: Option<Uuid>,
    #[serde(rename = "type", default)]
    message_type: MessageType,
    sender: Sender,
    #[serde(default)]
    visibility: Visibility,
    text: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::bounded::at_most::<_, _, { colloquy_domain::conversation::MAX_ATTACHMENTS }>"
    )]
    #[schema(max_items = 20)]
    attachments: Vec<Attachment>,
    reply_to: Option<Uuid>,
    #[serde(default)]
    forwarded: bool,
    #[serde(
        default,
        deserialize_with = "crate::bounded::at_most::<_, _, { colloquy_domain::conversation::MAX_MENTIONS }>"
    )]
    #[schema(max_items = 100)]
    mentions: Vec<String>,
    email: Option<EmailEnvelope>,
    location: Option<Location>,
    template: Option<Value>,
    interactive: Option<Value>,
    contacts: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: Map<String, Value>,
}

/// Reactions to add and remove.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReactionChanges {
    #[serde(
        default,
        deserialize_with = "crate::bounded::at_most::<_, _, { crate::bounded::MAX_REACTIONS }>"
    )]
    #[schema(max_items = 20)]
    add: Vec<Reaction>,
    #[serde(
        default,
        deserialize_with = "crate::bounded::at_most::<_, _, { crate::bounded::MAX_REACTIONS }>"
    )]
    #[schema(max_items = 20)]
    remove: Vec<Reaction>,
}

/// Body of `PATCH /v1/conversations/{id}/messages/{message_id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"text": "Your refund was sent today.", "reactions": {"add": [{"emoji": "👍", "sender": {"kind": "user", "id": "agent-42"}}]}}))]
#[serde(deny_unknown_fields)]
pub struct PatchMessage {
    text: Option<String>,
    visibility: Option<Visibility>,
    #[serde(default)]
    reactions: ReactionChanges,
}

/// Body of `POST /v1/conversations/{id}/messages/{message_id}/delivery`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"status": "failed", "error": {"code": "131026", "reason": "the recipient cannot receive messages"}}))]
#[serde(deny_unknown_fields)]
pub struct ReportDelivery {
    status: DeliveryStatus,
    error: Option<DeliveryError>,
}

fn message_view(message_id: MessageId) -> impl FnOnce(&Conversation, usize) -> Option<MessageView> {
    move |conversation, _| conversation.message(message_id).map(|m| MessageView::of(conversation, m))
}

fn found(view: Option<MessageView>, message_id: MessageId) -> Result<MessageView, ApiError> {
    view.ok_or_else(|| ApiError::not_found(format!("message {message_id}")))
}

/// `POST /v1/conversations/{id}/messages`
#[utoipa::path(
    post,
    path = "/conversations/{id}/messages",
    tag = "messages",
    summary = "Add a message",
    params(("id" = Uuid, Path, description = "The conversation's id.")),
    request_body = AddMessage,
    responses(
        (status = 201, description = "Added; `Location` names it, `ETag` is the conversation's version.", body = MessageView),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn add(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(conversation_id): Path<Uuid>,
    Json(body): Json<AddMessage>,
) -> Result<Versioned<MessageView>, ApiError> {
    let message_id = body.id.map_or_else(MessageId::new_v7, MessageId);
    let message = NewMessage {
        message_id,
        sender: body.sender,
        visibility: body.visibility,
        content: MessageContent {
            message_type: body.message_type,
            text: body.text,
            attachments: body.attachments,
            reply_to: body.reply_to.map(MessageId),
            forwarded: body.forwarded,
            mentions: body.mentions,
            mentions_everyone: false,
            email: body.email.map(Box::new),
            location: body.location.map(Box::new),
            template: body.template.map(Box::new),
            interactive: body.interactive.map(Box::new),
            contacts: body.contacts.map(Box::new),
            metadata: body.metadata,
        },
    };
    let command = match group_of(&state, &principal, conversation_id).await? {
        Some(group) => ConversationCommand::AddGroupMessage { message, group: Box::new(group) },
        None => ConversationCommand::AddMessage(message),
    };
    let (committed, position) =
        run(&state, &principal, &headers, conversation_id, expected, command, message_view(message_id))
            .await?;
    let location = format!("/v1/conversations/{conversation_id}/messages/{message_id}");
    Ok(Versioned::created(committed.version, location, found(committed.view, message_id)?).at(position))
}

/// The group of a group conversation, as it is now, for the domain to check a message against;
/// `None` for a one-to-one conversation (or one that does not exist, which the command reports).
/// Which group a conversation belongs to is set when it opens, so a cached conversation answers
/// it without a read of the store; the group itself is read current.
async fn group_of(
    state: &AppState,
    principal: &Principal,
    conversation_id: Uuid,
) -> Result<Option<Group>, ApiError> {
    require(principal, "conversations:write")?;
    let group_id = state
        .conversations()
        .read_settled(&principal.tenant, &conversation_id.to_string(), |conversation: &Conversation| {
            conversation.group_id
        })
        .await?
        .flatten();
    let Some(group_id) = group_id else { return Ok(None) };
    let group = state
        .groups()
        .read(&principal.tenant, &group_id.to_string(), |group: &Group, _| group.clone())
        .await?;
    // The conversation names the group, so it exists in this tenant; a missing one is refused
    // by the domain as `NotAGroupConversation` rather than sent unchecked.
    Ok(Some(group.unwrap_or_default()))
}

/// Query of `GET /v1/conversations/{id}/messages`: a page, now or at a point in the past.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    /// Items per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page (empty: the first page).
    cursor: Option<String>,
    /// Accepted for uniformity with list queries: the messages come from the conversation's
    /// current state, which always includes every acknowledged write.
    min_position: Option<i64>,
    /// The messages as they stood at this instant (with `at_position` too, whichever point
    /// comes first).
    as_of: Option<crate::instant::Instant>,
    /// The messages as of this global position.
    #[param(minimum = 0)]
    at_position: Option<i64>,
}

fn messages_page(conversation: &Conversation, after: usize, limit: usize) -> Page<MessageView> {
    let messages = conversation.messages.get(after..).unwrap_or_default();
    let data: Vec<MessageView> =
        messages.iter().take(limit).map(|m| MessageView::of(conversation, m)).collect();
    let next_cursor = (messages.len() > limit).then(|| cursor("msg", (after + limit) as u64));
    Page { data, next_cursor }
}

/// `GET /v1/conversations/{id}/messages`: oldest first.
#[utoipa::path(
    get,
    path = "/conversations/{id}/messages",
    tag = "messages",
    summary = "List messages",
    description = "With `as_of` or `at_position`, the messages as they stood then (edits and deletions as of then), folded \
        from the conversation's own events.",
    params(("id" = Uuid, Path, description = "The conversation's id."), MessagesQuery),
    responses(
        (status = 200, description = "A page of the conversation's messages, oldest first.", body = Page<MessageView>)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(conversation_id): Path<Uuid>,
    Query(query): Query<MessagesQuery>,
) -> Result<axum::Json<Page<MessageView>>, ApiError> {
    require(&principal, "conversations:read")?;
    let page = PageParams { limit: query.limit, cursor: query.cursor, min_position: query.min_position };
    let point = PointInTime { as_of: query.as_of, at_position: query.at_position };
    let limit = page.limit()?;
    let after = usize::try_from(page.after("msg")?).unwrap_or(usize::MAX);
    let id = conversation_id.to_string();
    let listed = match point.until()? {
        Some(until) => state
            .conversations()
            .read_at(&principal.tenant, &id, until, |conversation: &Conversation, _| {
                messages_page(conversation, after, limit)
            })
            .await?
            .map(|(page, _)| page),
        None => {
            state
                .conversations()
                .read(&principal.tenant, &id, |conversation: &Conversation, _| {
                    messages_page(conversation, after, limit)
                })
                .await?
        }
    };
    listed.map(axum::Json).ok_or_else(|| ApiError::not_found(format!("conversation {conversation_id}")))
}

/// `GET /v1/conversations/{id}/messages/{message_id}`
#[utoipa::path(
    get,
    path = "/conversations/{id}/messages/{message_id}",
    tag = "messages",
    summary = "Read a message",
    params(("id" = Uuid, Path, description = "The conversation's id."), ("message_id" = Uuid, Path, description = "The message's id.")),
    responses(
        (status = 200, description = "The message; `ETag` is the conversation's version.", body = MessageView)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((conversation_id, message_id)): Path<(Uuid, Uuid)>,
) -> Result<Versioned<MessageView>, ApiError> {
    require(&principal, "conversations:read")?;
    let message_id = MessageId(message_id);
    let read = state
        .conversations()
        .read(&principal.tenant, &conversation_id.to_string(), |conversation: &Conversation, version| {
            (version, conversation.message(message_id).map(|m| MessageView::of(conversation, m)))
        })
        .await?;
    let (version, view) =
        read.ok_or_else(|| ApiError::not_found(format!("conversation {conversation_id}")))?;
    Ok(Versioned::ok(version, found(view, message_id)?))
}

/// `PATCH /v1/conversations/{id}/messages/{message_id}`
#[utoipa::path(
    patch,
    path = "/conversations/{id}/messages/{message_id}",
    tag = "messages",
    summary = "Edit, react to or hide a message",
    description = "Replaces the text (the old one goes to `edit_history`), changes the visibility, adds and removes reactions.",
    params(("id" = Uuid, Path, description = "The conversation's id."), ("message_id" = Uuid, Path, description = "The message's id.")),
    request_body = PatchMessage,
    responses(
        (status = 200, description = "The message as changed; `ETag` is the conversation's version.", body = MessageView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path((conversation_id, message_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<PatchMessage>,
) -> Result<Versioned<MessageView>, ApiError> {
    let message_id = MessageId(message_id);
    let command = ConversationCommand::UpdateMessage {
        message_id,
        patch: MessagePatch {
            text: body.text,
            visibility: body.visibility,
            add_reactions: body.reactions.add,
            remove_reactions: body.reactions.remove,
        },
    };
    let (committed, position) =
        run(&state, &principal, &headers, conversation_id, expected, command, message_view(message_id))
            .await?;
    Ok(Versioned::ok(committed.version, found(committed.view, message_id)?).at(position))
}

/// `POST /v1/conversations/{id}/messages/{message_id}/delivery`
#[utoipa::path(
    post,
    path = "/conversations/{id}/messages/{message_id}/delivery",
    tag = "messages",
    summary = "Record a delivery status",
    description = "Sent, delivered, read or failed, as the provider reports it.",
    params(("id" = Uuid, Path, description = "The conversation's id."), ("message_id" = Uuid, Path, description = "The message's id.")),
    request_body = ReportDelivery,
    responses(
        (status = 200, description = "The message as changed; `ETag` is the conversation's version.", body = MessageView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn report_delivery(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path((conversation_id, message_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<ReportDelivery>,
) -> Result<Versioned<MessageView>, ApiError> {
    let message_id = MessageId(message_id);
    let command = ConversationCommand::UpdateDelivery { message_id, status: body.status, error: body.error };
    let (committed, position) =
        run(&state, &principal, &headers, conversation_id, expected, command, message_view(message_id))
            .await?;
    Ok(Versioned::ok(committed.version, found(committed.view, message_id)?).at(position))
}
