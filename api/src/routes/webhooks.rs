//! `/v1/webhooks`: subscriptions that receive the tenant's events over HTTP (docs/adr/0012).
//! A subscription is a versioned definition (created, changed, deleted on its stream); its
//! secret, shown once, and its deliveries (cursor, retries, pause, attempts) are kept beside it.
//! The deliveries themselves run in `crate::webhook_delivery`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use colloquy_domain::webhook::{ContentMode, Webhook};
use colloquy_infra::secrets;
use colloquy_infra::tokens::Principal;
use colloquy_projections::webhooks::{self, deliveries, state};

use crate::extract::{require, Auth, IfMatch, Json, Path, Query};
use crate::idempotency::HoldsSecret;
use crate::problem::ApiError;
use crate::routes::definitions::{self, DefinitionView, RevisionView, Scoped};
use crate::routes::Versioned;
use crate::state::AppState;
use crate::views::Page;
use crate::webhook_delivery::deliver::now_ms;
use crate::webhook_delivery::{safety, sign};

/// The longest grace a rotated secret may keep signing: 7 days.
const MAX_GRACE_SECONDS: i64 = 7 * 24 * 3600;

fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// How a subscription's deliveries stand.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryState {
    /// `active` (delivering, or waiting for events), `retrying` (a delivery failed and is tried
    /// again at `next_attempt_at`), `paused` (it failed for the retry period; see
    /// `paused_reason`, and resume it), `inactive` (turned off), or `starting` (just created).
    #[schema(example = "active")]
    pub status: &'static str,
    /// The last log position delivered (or passed over as not wanted): deliveries go on after it.
    pub position: Option<i64>,
    /// Events delivered so far.
    pub delivered_events: i64,
    /// When the last delivery was taken.
    pub last_delivered_at: Option<DateTime<Utc>>,
    /// When the failing delivery first failed.
    pub failing_since: Option<DateTime<Utc>>,
    /// Its attempts so far.
    pub attempts: i32,
    /// When it is tried next.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// What its last attempt got.
    pub last_error: Option<String>,
    /// When it was paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Why.
    pub paused_reason: Option<String>,
}

/// A subscription.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// Its id.
    pub id: Uuid,
    /// Its current version: 1 at creation, one more per change.
    pub version: u32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its current version was recorded.
    pub updated_at: DateTime<Utc>,
    /// What it is.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// Its deliveries.
    pub delivery: DeliveryState,
    /// When its secret was last rotated.
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Until when the secret before the last rotation still signs (a second signature).
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    /// The signing secret (`whsec_...`, Standard Webhooks): only in the answers to its creation
    /// and to a rotation, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

async fn view(
    state: &AppState,
    tenant: &str,
    defined: DefinitionView<Webhook>,
) -> Result<WebhookView, ApiError> {
    let id = defined.id.to_string();
    let stored = state::read(state.store(), tenant, &id).await?;
    let secrets = secrets::get(state.store(), tenant, &id).await?;
    let delivery = match stored {
        None => DeliveryState {
            status: if defined.definition.active { "starting" } else { "inactive" },
            position: None,
            delivered_events: 0,
            last_delivered_at: None,
            failing_since: None,
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
            paused_at: None,
            paused_reason: None,
        },
        Some(stored) => DeliveryState {
            status: if stored.paused_at.is_some() {
                "paused"
            } else if !defined.definition.active {
                "inactive"
            } else if stored.failing_since.is_some() {
                "retrying"
            } else {
                "active"
            },
            position: Some(stored.cursor),
            delivered_events: stored.delivered,
            last_delivered_at: stored.delivered_at.map(instant),
            failing_since: stored.failing_since.map(instant),
            attempts: stored.attempts,
            next_attempt_at: (stored.next_attempt_at > 0).then(|| instant(stored.next_attempt_at)),
            last_error: stored.last_error,
            paused_at: stored.paused_at.map(instant),
            paused_reason: stored.paused_reason,
        },
    };
    let now = now_ms();
    Ok(WebhookView {
        id: defined.id,
        version: defined.version,
        created_at: defined.created_at,
        updated_at: defined.updated_at,
        webhook: defined.definition,
        delivery,
        secret_rotated_at: secrets.as_ref().and_then(|s| s.rotated_at).map(instant),
        previous_secret_valid_until: secrets
            .as_ref()
            .and_then(|s| s.previous.as_ref())
            .map(|(_, until)| *until)
            .filter(|until| *until > now)
            .map(instant),
        secret: None,
    })
}

/// Refuses a URL the server may not call (422 naming `url`).
async fn check_url(state: &AppState, url: &str) -> Result<(), ApiError> {
    let url = colloquy_domain::webhook::webhook_url("url", url).map_err(ApiError::invalid)?;
    match safety::refusal(&url, state.webhook_settings().allow_private).await {
        Some(reason) => Err(ApiError::unacceptable_field("url", reason)),
        None => Ok(()),
    }
}

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "CRM sync", "url": "https://crm.example.com/hooks/colloquy",
    "event_types": ["MessageAdded", "StatusChanged"]}))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Optional client-chosen id (a UUID); a v7 UUID is generated when absent.
    id: Option<Uuid>,
    /// What people call it.
    name: String,
    /// Where events are POSTed (`http` or `https`); a host that is or resolves to an internal
    /// address is refused unless the operator allows such addresses.
    url: String,
    /// The event types it receives; none or absent: every type.
    #[serde(default)]
    event_types: Vec<String>,
    /// The aggregate types it receives (`conversation`, `contact`, `group`, `sla`...); none or
    /// absent: every type.
    #[serde(default)]
    aggregate_types: Vec<String>,
    /// Whether it receives events (default true).
    active: Option<bool>,
    /// One event per request (`structured`, the default) or up to 100 (`batched`).
    content_mode: Option<ContentMode>,
}

/// `POST /v1/webhooks`
#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    summary = "Subscribe a URL to the tenant's events",
    description = "Events recorded after the subscription's creation are POSTed to the URL as CloudEvents 1.0, in log order (so in order per aggregate), signed by the Standard Webhooks scheme (`webhook-id`: the event id, `webhook-timestamp`, `webhook-signature`). At least once: a receiver dedups by `webhook-id` or the CloudEvent's `id`. A failure is retried with exponential backoff and jitter for 24 hours, then the subscription is paused with the reason. The answer carries the signing secret, the only time it is shown: a retry with the same `Idempotency-Key` answers 409 with `Location` naming the subscription, since the secret is not kept for it.",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Created; `Location` names it; `secret` is shown this once.", body = WebhookView),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Json(body): Json<CreateWebhook>,
) -> Result<Response, ApiError> {
    require(&principal, Webhook::WRITE)?;
    let webhook = Webhook {
        name: body.name,
        url: body.url,
        event_types: body.event_types,
        aggregate_types: body.aggregate_types,
        active: body.active.unwrap_or(true),
        content_mode: body.content_mode.unwrap_or_default(),
    };
    let webhook = colloquy_domain::definition::Definition::validated(webhook).map_err(ApiError::invalid)?;
    check_url(&state, &webhook.url).await?;
    let id = body.id.unwrap_or_else(Uuid::now_v7);
    // The secret is kept first: a subscription never exists without one.
    let secret = sign::new_secret();
    if let Ok(existing) = definitions::read(state.webhooks(), &principal, id).await {
        return Err(ApiError::conflict(format!("webhook {} exists already", existing.body.id)));
    }
    secrets::put(state.store(), principal.tenant.as_str(), &id.to_string(), &secret).await?;
    let created =
        definitions::create(state.webhooks(), &principal, &headers, "webhooks", Some(id), webhook).await?;
    let mut body = view(&state, principal.tenant.as_str(), created.body).await?;
    body.secret = Some(secret);
    let location = format!("/v1/webhooks/{id}");
    let response = Versioned::created(created.version, location.clone(), body).at(created.position);
    // The secret must never reach the store of idempotent responses.
    Ok(HoldsSecret::mark(response.into_response(), location, LOST_SECRET))
}

/// What a client does that lost a webhook's secret (an idempotent retry does not show it again).
const LOST_SECRET: &str = "rotate it (POST /v1/webhooks/{id}/rotate-secret)";

/// `GET /v1/webhooks`
#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "webhooks",
    summary = "List webhook subscriptions",
    description = "Every subscription of the tenant, oldest first, with its deliveries' state; includes every change acknowledged before the request.",
    responses((status = 200, description = "The subscriptions.", body = Page<WebhookView>))
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<axum::Json<Page<WebhookView>>, ApiError> {
    require(&principal, Webhook::READ)?;
    state.await_projection(webhooks::NAME, Some(state.log().head())).await?;
    let tenant = principal.tenant.as_str();
    let mut data = Vec::new();
    for listed in webhooks::list(state.store(), tenant).await? {
        let Ok(id) = Uuid::parse_str(&listed.id) else { continue };
        let defined = DefinitionView {
            id,
            version: listed.version,
            created_at: listed.created_at,
            updated_at: listed.updated_at,
            definition: listed.webhook,
        };
        data.push(view(&state, tenant, defined).await?);
    }
    Ok(axum::Json(Page { data, next_cursor: None }))
}

async fn current(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<Versioned<WebhookView>, ApiError> {
    require(principal, Webhook::READ)?;
    let found = definitions::read(state.webhooks(), principal, id).await?;
    let body = view(state, principal.tenant.as_str(), found.body).await?;
    Ok(Versioned::ok(found.version, body))
}

/// `GET /v1/webhooks/{id}`
#[utoipa::path(
    get,
    path = "/webhooks/{id}",
    tag = "webhooks",
    summary = "Read a webhook subscription",
    params(("id" = Uuid, Path, description = "The subscription's id.")),
    responses((status = 200, description = "It and its deliveries' state; `ETag` is its stream's version.", body = WebhookView))
)]
pub async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
) -> Result<Versioned<WebhookView>, ApiError> {
    current(&state, &principal, id).await
}

/// Body of `PATCH /v1/webhooks/{id}`: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"url": "https://crm.example.com/hooks/v2", "active": true}))]
#[serde(deny_unknown_fields)]
pub struct PatchWebhook {
    /// A new name.
    name: Option<String>,
    /// A new URL (checked as at creation); a failing delivery is tried again at once.
    url: Option<String>,
    /// New event types (none: every type).
    event_types: Option<Vec<String>>,
    /// New aggregate types (none: every type).
    aggregate_types: Option<Vec<String>>,
    /// Turns it on or off; turned on, it goes on from where it was.
    active: Option<bool>,
    /// `structured` or `batched`.
    content_mode: Option<ContentMode>,
}

/// `PATCH /v1/webhooks/{id}`
#[utoipa::path(
    patch,
    path = "/webhooks/{id}",
    tag = "webhooks",
    summary = "Change a webhook subscription",
    description = "Records the changed subscription as its next version.",
    params(("id" = Uuid, Path, description = "The subscription's id.")),
    request_body = PatchWebhook,
    responses(
        (status = 200, description = "Its new current version.", body = WebhookView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(id): Path<Uuid>,
    Json(body): Json<PatchWebhook>,
) -> Result<Versioned<WebhookView>, ApiError> {
    require(&principal, Webhook::WRITE)?;
    let found = definitions::read(state.webhooks(), &principal, id).await?;
    let mut webhook = found.body.definition.clone();
    let url_changed = body.url.as_ref().is_some_and(|url| *url != webhook.url);
    if let Some(url) = body.url {
        check_url(&state, &url).await?;
        webhook.url = url;
    }
    webhook.name = body.name.unwrap_or(webhook.name);
    webhook.event_types = body.event_types.unwrap_or(webhook.event_types);
    webhook.aggregate_types = body.aggregate_types.unwrap_or(webhook.aggregate_types);
    webhook.active = body.active.unwrap_or(webhook.active);
    webhook.content_mode = body.content_mode.unwrap_or(webhook.content_mode);
    // Without If-Match the change applies to the version just read, so a concurrent one is not lost.
    let expected = expected.or(Some(found.version));
    let replaced =
        definitions::replace(state.webhooks(), &principal, &headers, (id, expected), webhook).await?;
    if url_changed {
        state::retry_now(state.store(), (principal.tenant.as_str(), &id.to_string())).await?;
    }
    let body = view(&state, principal.tenant.as_str(), replaced.body).await?;
    Ok(Versioned::ok(replaced.version, body).at(replaced.position))
}

/// `DELETE /v1/webhooks/{id}`
#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete a webhook subscription",
    description = "Deliveries stop; its secret and delivery log are removed; its versions stay on its stream.",
    params(("id" = Uuid, Path, description = "The subscription's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let response = definitions::delete(state.webhooks(), &principal, &headers, (id, expected)).await?;
    let key = (principal.tenant.as_str(), id.to_string());
    secrets::delete(state.store(), key.0, &key.1).await?;
    crate::webhook_delivery::deliver::secrets_changed();
    deliveries::forget(state.store(), (key.0, &key.1)).await?;
    Ok(response)
}

/// `GET /v1/webhooks/{id}/versions`
#[utoipa::path(
    get,
    path = "/webhooks/{id}/versions",
    tag = "webhooks",
    summary = "Read every version of a webhook subscription",
    params(("id" = Uuid, Path, description = "The subscription's id.")),
    responses((status = 200, description = "Every version, oldest first.", body = Page<RevisionView<Webhook>>))
)]
pub async fn versions(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Page<RevisionView<Webhook>>>, ApiError> {
    definitions::versions(state.webhooks(), &principal, id).await
}

/// Query of `POST /v1/webhooks/{id}/rotate-secret`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RotateParams {
    /// How long the secret it replaces still signs, in seconds: 0 to 604800 (default 86400).
    /// Meanwhile each request carries both signatures.
    #[param(minimum = 0, maximum = 604800)]
    grace_seconds: Option<i64>,
}

/// `POST /v1/webhooks/{id}/rotate-secret`
#[utoipa::path(
    post,
    path = "/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    summary = "Rotate a webhook's signing secret",
    description = "A new secret signs from now on; the one it replaces signs too until the grace ends (two signatures in `webhook-signature`). The answer shows the new secret, this once: a retry with the same `Idempotency-Key` answers 409 naming the subscription, rotating nothing, since the secret is not kept for it.",
    params(("id" = Uuid, Path, description = "The subscription's id."), RotateParams),
    responses(
        (status = 200, description = "The subscription with its new `secret`.", body = WebhookView),
        (status = 409, response = crate::openapi::Conflict)
    )
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
    Query(params): Query<RotateParams>,
) -> Result<Response, ApiError> {
    require(&principal, Webhook::WRITE)?;
    let grace = params.grace_seconds.unwrap_or(86_400);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(ApiError::invalid_field("grace_seconds", format!("must be 0 to {MAX_GRACE_SECONDS}")));
    }
    let found = definitions::read(state.webhooks(), &principal, id).await?;
    let secret = sign::new_secret();
    let now = now_ms();
    let tenant = principal.tenant.as_str();
    if !secrets::rotate(state.store(), tenant, &id.to_string(), &secret, (now, now + grace * 1000)).await? {
        return Err(ApiError::not_found(format!("webhook {id}")));
    }
    crate::webhook_delivery::deliver::secrets_changed();
    let mut body = view(&state, tenant, found.body).await?;
    body.secret = Some(secret);
    let response = Versioned::ok(found.version, body).into_response();
    Ok(HoldsSecret::mark(response, format!("/v1/webhooks/{id}"), LOST_SECRET))
}

/// Query of `POST /v1/webhooks/{id}/replay`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReplayParams {
    /// The log position to deliver from again (the `position` of an event, or of a CloudEvent
    /// received): it and every later event the subscription wants are sent again, in order.
    #[param(value_type = i64, minimum = 1)]
    from_position: String,
}

/// `POST /v1/webhooks/{id}/replay`
#[utoipa::path(
    post,
    path = "/webhooks/{id}/replay",
    tag = "webhooks",
    summary = "Deliver a webhook's events again from a position",
    description = "Moves the subscription's deliveries back (or forward) to start at `from_position`, lifting a pause or a retry wait. Events are sent again with their own ids, so a receiver that dedups skips what it has.",
    params(("id" = Uuid, Path, description = "The subscription's id."), ReplayParams),
    responses((status = 202, description = "Deliveries go on from there.", body = WebhookView))
)]
pub async fn replay(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
    Query(params): Query<ReplayParams>,
) -> Result<Response, ApiError> {
    require(&principal, Webhook::WRITE)?;
    // Read as text, so that the scope is checked before the value.
    let from = params.from_position.trim().parse::<i64>().ok().filter(|from| *from >= 1);
    let from =
        from.ok_or_else(|| ApiError::invalid_field("from_position", "must be a log position, 1 or more"))?;
    move_deliveries(&state, &principal, id, Some(from - 1)).await
}

/// `POST /v1/webhooks/{id}/resume`
#[utoipa::path(
    post,
    path = "/webhooks/{id}/resume",
    tag = "webhooks",
    summary = "Resume a paused webhook",
    description = "Deliveries go on from where they stopped, at once: nothing is skipped.",
    params(("id" = Uuid, Path, description = "The subscription's id.")),
    responses((status = 202, description = "Resumed.", body = WebhookView))
)]
pub async fn resume(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    require(&principal, Webhook::WRITE)?;
    move_deliveries(&state, &principal, id, None).await
}

/// Rewinds (to after `after`) or resumes `id`'s deliveries: 202 with the subscription.
async fn move_deliveries(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    after: Option<i64>,
) -> Result<Response, ApiError> {
    let found = definitions::read(state.webhooks(), principal, id).await?;
    // Its deliveries' row is made by the projection of its creation.
    state.await_projection(webhooks::NAME, Some(state.log().head())).await?;
    let key = (principal.tenant.as_str(), id.to_string());
    let moved = match after {
        Some(after) => state::rewind(state.store(), (key.0, &key.1), after).await?,
        None => state::resume(state.store(), (key.0, &key.1)).await?,
    };
    if !moved {
        return Err(ApiError::not_found(format!("webhook {id}")));
    }
    let version = found.version;
    let body = view(state, key.0, found.body).await?;
    let mut response = Versioned::ok(version, body).into_response();
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}

/// One attempt to deliver.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// Its id.
    pub id: String,
    /// When it was sent.
    pub attempted_at: DateTime<Utc>,
    /// `events`, or `ping` (a test).
    pub kind: String,
    /// The `webhook-id` it carried (the same on each attempt of the same events).
    pub message_id: String,
    /// The first event's log position.
    pub first_position: Option<i64>,
    /// The last's.
    pub last_position: Option<i64>,
    /// How many events it carried.
    pub events: i32,
    /// Which attempt of them it was.
    pub attempt: i32,
    /// `delivered` or `failed`.
    pub outcome: String,
    /// The response's status, if one came.
    pub status_code: Option<i32>,
    /// Why it failed.
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub latency_ms: i64,
    /// The start of the response's body.
    pub response_excerpt: Option<String>,
}

impl From<deliveries::Delivery> for DeliveryView {
    fn from(d: deliveries::Delivery) -> Self {
        Self {
            id: d.id,
            attempted_at: instant(d.attempted_at),
            kind: d.kind,
            message_id: d.message_id,
            first_position: d.first_position,
            last_position: d.last_position,
            events: d.events,
            attempt: d.attempt,
            outcome: d.outcome,
            status_code: d.status_code,
            error: d.error,
            latency_ms: d.latency_ms,
            response_excerpt: d.response_excerpt,
        }
    }
}

/// Query of `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesParams {
    /// Attempts per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    cursor: Option<String>,
}

/// `GET /v1/webhooks/{id}/deliveries`
#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    tag = "webhooks",
    summary = "Read a webhook's delivery log",
    description = "Every attempt of the last 7 days, newest first: status, latency, the response's start.",
    params(("id" = Uuid, Path, description = "The subscription's id."), DeliveriesParams),
    responses((status = 200, description = "A page of attempts.", body = Page<DeliveryView>))
)]
pub async fn deliveries(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
    Query(params): Query<DeliveriesParams>,
) -> Result<axum::Json<Page<DeliveryView>>, ApiError> {
    require(&principal, Webhook::READ)?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "must be 1 to 100"));
    }
    let before = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(cursor) => Some(
            Uuid::parse_str(cursor)
                .map_err(|_| ApiError::invalid_field("cursor", "is not a cursor this list issued"))?
                .to_string(),
        ),
        None => None,
    };
    definitions::read(state.webhooks(), &principal, id).await?;
    let key = (principal.tenant.as_str(), id.to_string());
    let page = deliveries::page(state.store(), (key.0, &key.1), before.as_deref(), limit + 1).await?;
    let more = page.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    let data: Vec<DeliveryView> =
        page.into_iter().take(usize::try_from(limit).unwrap_or(0)).map(DeliveryView::from).collect();
    let next_cursor = if more { data.last().map(|d| d.id.clone()) } else { None };
    Ok(axum::Json(Page { data, next_cursor }))
}

/// `POST /v1/webhooks/{id}/ping`
#[utoipa::path(
    post,
    path = "/webhooks/{id}/ping",
    tag = "webhooks",
    summary = "Send a test event to a webhook",
    description = "POSTs a signed `colloquy.webhook.ping` CloudEvent to the URL now, outside the deliveries' order, and answers what came back (a failure is an answer too, not an error). Logged with the deliveries.",
    params(("id" = Uuid, Path, description = "The subscription's id.")),
    responses((status = 200, description = "The attempt.", body = DeliveryView))
)]
pub async fn ping(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<DeliveryView>, ApiError> {
    require(&principal, Webhook::WRITE)?;
    let found = definitions::read(state.webhooks(), &principal, id).await?;
    let tenant = principal.tenant.as_str();
    let key = id.to_string();
    let secrets = secrets::get(state.store(), tenant, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("webhook {id}")))?;
    let message_id = Uuid::now_v7().to_string();
    let now = now_ms();
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": message_id,
        "source": "/colloquy/webhook",
        "type": "colloquy.webhook.ping",
        "subject": format!("webhook/{id}"),
        "time": instant(now),
        "datacontenttype": "application/json",
        "tenant": tenant,
        "data": {"webhook_id": id, "version": found.version},
    });
    let sender = state.webhook_settings().sender()?;
    let message = crate::webhook_delivery::send::Message {
        url: &found.body.definition.url,
        id: &message_id,
        content_type: "application/cloudevents+json",
        body: body.to_string().into_bytes(),
        secrets: secrets.signing(now),
    };
    let sent = sender.send(message).await;
    let delivery = deliveries::Delivery {
        id: message_id.clone(),
        attempted_at: now,
        kind: "ping".into(),
        message_id,
        first_position: None,
        last_position: None,
        events: 0,
        attempt: 1,
        outcome: if sent.delivered() { "delivered" } else { "failed" }.into(),
        status_code: sent.status.map(i32::from),
        error: sent.error,
        latency_ms: sent.latency_ms,
        response_excerpt: sent.excerpt,
    };
    deliveries::record(state.store(), (tenant, &key), &delivery).await?;
    Ok(axum::Json(DeliveryView::from(delivery)))
}
