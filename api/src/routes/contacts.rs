//! `/v1/contacts`: create, read, update a contact, and read its history.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use colloquy_domain::contact::{ContactPatch, ContactStatus, NewContact};
use colloquy_domain::{Channel, Contact, ContactCommand, ContactId};
use colloquy_infra::Intent;

use crate::extract::{require, Auth, IfMatch, Json, Path, Query};
use crate::paging::{cursor, PageParams};
use crate::point_in_time::{not_yet, PointInTime};
use crate::problem::{command_failed, ApiError};
use crate::routes::Ask;
use crate::routes::{origin, Versioned};
use crate::serde_util::double_option;
use crate::state::AppState;
use crate::views::{ContactView, EventView, Page};

/// Body of `POST /v1/contacts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"first_name": "Ada", "last_name": "Lovelace", "phone": "+44 20 7946 0958",
    "email": "ada@example.com", "preferred_channel": "whatsapp", "labels": ["vip"]}))]
#[serde(deny_unknown_fields)]
pub struct CreateContact {
    /// Optional client-chosen id (a UUID); a v7 UUID is generated when absent.
    id: Option<Uuid>,
    first_name: String,
    last_name: Option<String>,
    full_name: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    preferred_channel: Option<Channel>,
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: Map<String, Value>,
    #[serde(
        default,
        deserialize_with = "crate::bounded::at_most::<_, _, { colloquy_domain::validate::MAX_LABELS }>"
    )]
    #[schema(max_items = 50)]
    labels: Vec<String>,
}

/// Body of `PATCH /v1/contacts/{id}`: absent fields stay, `null` clears an optional one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"email": "ada.lovelace@example.com", "phone": null}))]
#[serde(deny_unknown_fields)]
pub struct PatchContact {
    first_name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    last_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    full_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    preferred_channel: Option<Option<Channel>>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
    #[serde(
        default,
        deserialize_with = "crate::bounded::optional_at_most::<_, _, { colloquy_domain::validate::MAX_LABELS }>"
    )]
    #[schema(max_items = 50)]
    labels: Option<Vec<String>>,
    status: Option<ContactStatus>,
}

/// `POST /v1/contacts`
#[utoipa::path(
    post,
    path = "/contacts",
    tag = "contacts",
    summary = "Create a contact",
    request_body = CreateContact,
    responses(
        (status = 201, description = "Created; `Location` names it, `ETag` is its version.", body = ContactView),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Json(body): Json<CreateContact>,
) -> Result<Versioned<ContactView>, ApiError> {
    require(&principal, "contacts:write")?;
    let origin = origin(&principal, &headers)?;
    let contact_id = body.id.map_or_else(ContactId::new_v7, ContactId);
    let command = ContactCommand::CreateContact {
        contact_id,
        tenant_id: principal.tenant.clone(),
        contact: NewContact {
            first_name: body.first_name,
            last_name: body.last_name,
            full_name: body.full_name,
            phone: body.phone,
            email: body.email,
            preferred_channel: body.preferred_channel,
            metadata: body.metadata,
            labels: body.labels,
        },
    };
    let committed = state
        .contacts()
        .execute(&contact_id.to_string(), command, Intent::Create, None, &origin, ContactView::of)
        .await
        .map_err(|e| command_failed(e, format!("contact {contact_id}")))?;
    let position = committed.position;
    Ok(Versioned::created(committed.version, format!("/v1/contacts/{contact_id}"), committed.view)
        .at(position))
}

/// `GET /v1/contacts/{id}`
#[utoipa::path(
    get,
    path = "/contacts/{id}",
    tag = "contacts",
    summary = "Read a contact",
    description = "With `as_of` or `at_position`, the contact as it stood then, folded from its own events; \
        `Colloquy-Position` names the last one.",
    params(("id" = Uuid, Path, description = "The contact's id."), PointInTime),
    responses(
        (status = 200, description = "The contact; `ETag` is its version (then).", body = ContactView)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(contact_id): Path<Uuid>,
    Query(point): Query<PointInTime>,
) -> Result<Versioned<ContactView>, ApiError> {
    require(&principal, "contacts:read")?;
    if let Some(until) = point.until()? {
        let found = state
            .contacts()
            .read_at(&principal.tenant, &contact_id.to_string(), until, |contact: &Contact, version| {
                (version, ContactView::of(contact, version))
            })
            .await?;
        let ((version, view), position) = found.ok_or_else(|| not_yet(&format!("contact {contact_id}")))?;
        return Ok(Versioned::ok(version, view).at(Some(position)));
    }
    let found = state
        .contacts()
        .read(&principal.tenant, &contact_id.to_string(), |contact: &Contact, version| {
            (version, ContactView::of(contact, version))
        })
        .await?;
    let (version, view) = found.ok_or_else(|| ApiError::not_found(format!("contact {contact_id}")))?;
    Ok(Versioned::ok(version, view))
}

/// `PATCH /v1/contacts/{id}`
#[utoipa::path(
    patch,
    path = "/contacts/{id}",
    tag = "contacts",
    summary = "Update a contact",
    description = "Absent fields stay as they are; `null` clears an optional one.",
    params(("id" = Uuid, Path, description = "The contact's id.")),
    request_body = PatchContact,
    responses(
        (status = 200, description = "The updated contact.", body = ContactView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(contact_id): Path<Uuid>,
    Json(body): Json<PatchContact>,
) -> Result<Versioned<ContactView>, ApiError> {
    let command = ContactCommand::UpdateContact(ContactPatch {
        first_name: body.first_name,
        last_name: body.last_name,
        full_name: body.full_name,
        phone: body.phone,
        email: body.email,
        preferred_channel: body.preferred_channel,
        metadata: body.metadata,
        labels: body.labels,
        status: body.status,
    });
    let ask = Ask {
        scope: "contacts:write",
        kind: "contact",
        id: contact_id,
        intent: Intent::Update,
        expected,
        command,
    };
    let committed =
        crate::routes::command(state.contacts(), &principal, &headers, ask, ContactView::of).await?;
    Ok(Versioned::changed(committed))
}

/// `POST /v1/contacts/{id}/erase`
#[utoipa::path(
    post,
    path = "/contacts/{id}/erase",
    tag = "contacts",
    summary = "Erase a contact's personal data",
    description = "The right to erasure, without rewriting history (crypto-shredding): the key the contact's \
        personal data is kept under (names, phone, e-mail, metadata, and the text and attachments of the messages \
        they sent) is destroyed in the commit that records `ContactErased`. Every read, read model, export and \
        stream shows those values as erased from then on (`[erased]` for a required text, `null` otherwise); \
        the rest of history (counts, times, statuses) and the hash chain are intact. Snapshots and idempotent \
        answers that held the data are deleted once the read models have applied the erasure. Final; erasing \
        again changes nothing. Scope `contacts:erase`.",
    params(("id" = Uuid, Path, description = "The contact's id.")),
    security(("bearer" = ["contacts:erase"])),
    responses(
        (status = 200, description = "The erased contact.", body = ContactView)
    )
)]
pub async fn erase(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Path(contact_id): Path<Uuid>,
) -> Result<Versioned<ContactView>, ApiError> {
    let ask = Ask {
        scope: "contacts:erase",
        kind: "contact",
        id: contact_id,
        intent: Intent::Update,
        expected: None,
        command: ContactCommand::EraseContact,
    };
    let committed =
        crate::routes::command(state.contacts(), &principal, &headers, ask, ContactView::of).await?;
    // A cached conversation holds the contact's messages as they read before.
    state.conversations().forget_all();
    // The copies outside the events go once the inbox has rewritten its rows (the snapshots
    // and answers are deleted whether or not it has; a later checkpoint truncates the logs).
    if let Some(position) = committed.position {
        if let Err(error) =
            state.await_projection(colloquy_projections::conversation_list::NAME, Some(position)).await
        {
            tracing::warn!(?error, contact = %contact_id, "the inbox had not applied an erasure when its copies were cleared");
        }
        let cleared =
            colloquy_infra::erasure::clear_copies(state.store(), &principal.tenant, &contact_id.to_string())
                .await?;
        tracing::info!(contact = %contact_id, ?cleared, "erased a contact's personal data");
    }
    Ok(Versioned::changed(committed))
}

/// `GET /v1/contacts/{id}/events`
#[utoipa::path(
    get,
    path = "/contacts/{id}/events",
    tag = "contacts",
    summary = "Read a contact's history",
    params(("id" = Uuid, Path, description = "The contact's id."), PageParams),
    responses(
        (status = 200, description = "A page of the contact's events with their metadata, in order.", body = Page<EventView>)
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(contact_id): Path<Uuid>,
    Query(page): Query<PageParams>,
) -> Result<axum::Json<Page<EventView>>, ApiError> {
    require(&principal, "contacts:read")?;
    stream_events(&state, &principal, "contact", contact_id, &page).await.map(axum::Json)
}

/// A page of one aggregate's events; 404 when the tenant has no such stream.
pub(crate) async fn stream_events(
    state: &AppState,
    principal: &colloquy_infra::tokens::Principal,
    aggregate_type: &str,
    aggregate_id: Uuid,
    page: &PageParams,
) -> Result<Page<EventView>, ApiError> {
    let limit = page.limit()?;
    let after = page.after("seq")?;
    let after = i64::try_from(after).map_err(|_| ApiError::invalid_field("cursor", "is out of range"))?;
    // One more than asked tells whether another page follows.
    let mut events = state
        .store()
        .stream_page(&principal.tenant, aggregate_type, &aggregate_id.to_string(), after, limit as i64 + 1)
        .await?;
    if events.is_empty() && after == 0 {
        return Err(ApiError::not_found(format!("{aggregate_type} {aggregate_id}")));
    }
    let next_cursor = (events.len() > limit).then(|| {
        events.truncate(limit);
        cursor("seq", events.last().map_or(0, |e| e.sequence as u64))
    });
    Ok(Page { data: events.into_iter().map(EventView::from).collect(), next_cursor })
}
