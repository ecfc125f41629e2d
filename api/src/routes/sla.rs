//! `/v1/sla-policies` (versioned SLA policies) and a conversation's SLA clocks
//! (`/v1/conversations/{id}/sla`: the applied policy and every timer, its history, and applying a
//! policy by command).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use colloquy_domain::sla::{
    AppliedPolicy, Catalog, ConversationSla, Metric, PolicyVersion, SlaCommand, SlaPolicy, Timer, TimerState,
};
use colloquy_infra::Intent;
use colloquy_projections::sla::definitions as catalog_table;

use crate::extract::{require, Auth, IfMatch, Json, Path, Query};
use crate::paging::PageParams;
use crate::problem::ApiError;
use crate::routes::contacts::stream_events;
use crate::routes::definitions::{self, DefinitionView, RevisionView};
use crate::routes::{command, Ask, Versioned};
use crate::state::AppState;
use crate::views::{EventView, Page};

/// Body of `POST /v1/sla-policies`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "Standard", "rank": 10,
    "conditions": {"inbox_ids": ["support"], "priorities": ["high", "urgent"]},
    "targets": [
        {"metric": "first_response", "threshold_seconds": 3600, "business_hours": true,
         "warnings": [{"percent": 75}]},
        {"metric": "first_response", "priority": "urgent", "threshold_seconds": 900},
        {"metric": "next_response", "threshold_seconds": 7200, "business_hours": true},
        {"metric": "total_resolution", "threshold_seconds": 86400, "business_hours": true}
    ]}))]
pub struct CreatePolicy {
    /// Optional client-chosen id (a UUID); a v7 UUID is generated when absent.
    id: Option<Uuid>,
    #[serde(flatten)]
    policy: SlaPolicy,
}

/// `POST /v1/sla-policies`
#[utoipa::path(
    post,
    path = "/sla-policies",
    tag = "sla",
    summary = "Create an SLA policy",
    description = "Among the enabled policies whose conditions hold, the lowest rank applies. A policy applies to timers that start after its version was recorded, never to the past.",
    request_body = CreatePolicy,
    responses(
        (status = 201, description = "Created, as version 1; `Location` names it.", body = DefinitionView<SlaPolicy>),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Json(body): Json<CreatePolicy>,
) -> Result<Versioned<DefinitionView<SlaPolicy>>, ApiError> {
    definitions::create(state.policies(), &principal, &headers, "sla-policies", body.id, body.policy).await
}

/// `GET /v1/sla-policies`
#[utoipa::path(
    get,
    path = "/sla-policies",
    tag = "sla",
    summary = "List SLA policies",
    responses((status = 200, description = "The tenant's policies, oldest first.", body = Page<DefinitionView<SlaPolicy>>))
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<axum::Json<Page<DefinitionView<SlaPolicy>>>, ApiError> {
    definitions::list(&state, &principal).await
}

/// `GET /v1/sla-policies/{id}`
#[utoipa::path(
    get,
    path = "/sla-policies/{id}",
    tag = "sla",
    summary = "Read an SLA policy",
    params(("id" = Uuid, Path, description = "The policy's id.")),
    responses((status = 200, description = "Its current version; `ETag` is its stream's version.", body = DefinitionView<SlaPolicy>))
)]
pub async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
) -> Result<Versioned<DefinitionView<SlaPolicy>>, ApiError> {
    definitions::get(state.policies(), &principal, id).await
}

/// `PUT /v1/sla-policies/{id}`
#[utoipa::path(
    put,
    path = "/sla-policies/{id}",
    tag = "sla",
    summary = "Replace an SLA policy",
    description = "Records the body as the next version. Running timers keep the terms they started under; timers that start later follow the new version.",
    params(("id" = Uuid, Path, description = "The policy's id.")),
    request_body = SlaPolicy,
    responses(
        (status = 200, description = "Its new current version.", body = DefinitionView<SlaPolicy>),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn replace(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(id): Path<Uuid>,
    Json(policy): Json<SlaPolicy>,
) -> Result<Versioned<DefinitionView<SlaPolicy>>, ApiError> {
    definitions::replace(state.policies(), &principal, &headers, (id, expected), policy).await
}

/// `DELETE /v1/sla-policies/{id}`
#[utoipa::path(
    delete,
    path = "/sla-policies/{id}",
    tag = "sla",
    summary = "Delete an SLA policy",
    params(("id" = Uuid, Path, description = "The policy's id.")),
    responses(
        (status = 204, description = "Deleted: it starts no more timers; its versions stay readable."),
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
    definitions::delete(state.policies(), &principal, &headers, (id, expected)).await
}

/// `GET /v1/sla-policies/{id}/versions`
#[utoipa::path(
    get,
    path = "/sla-policies/{id}/versions",
    tag = "sla",
    summary = "Read every version of an SLA policy",
    params(("id" = Uuid, Path, description = "The policy's id.")),
    responses((status = 200, description = "Every version, oldest first.", body = Page<RevisionView<SlaPolicy>>))
)]
pub async fn versions(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Page<RevisionView<SlaPolicy>>>, ApiError> {
    definitions::versions(state.policies(), &principal, id).await
}

/// One SLA timer of a conversation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SlaTimerView {
    /// Its id within the conversation (`first_response`, `next_response:2`).
    timer_id: String,
    /// What it measures.
    metric: Metric,
    /// Where it is.
    state: TimerState,
    /// Whether it ran past its threshold.
    breached: bool,
    /// When it breached (its computed due time).
    breached_at: Option<DateTime<Utc>>,
    /// When it started.
    started_at: DateTime<Utc>,
    /// When it breaches if it keeps running; `null` unless running.
    due_at: Option<DateTime<Utc>>,
    /// Its threshold, in its clock's seconds.
    threshold_seconds: i64,
    /// Seconds its clock has counted by now (business seconds on a calendar; pauses excluded).
    business_seconds: i64,
    /// Threshold minus counted seconds: negative once overrun.
    remaining_seconds: i64,
    /// Which of its warnings were given.
    warnings_given: Vec<usize>,
    /// The policy and version it runs under.
    policy_id: Uuid,
    /// The policy's version.
    policy_version: u32,
    /// The calendar whose business hours count; `null` when every hour counts.
    calendar_id: Option<Uuid>,
    /// For an assignment response, the agent whose reply fulfils it.
    assignee_id: Option<String>,
    /// When it was fulfilled or cancelled.
    stopped_at: Option<DateTime<Utc>>,
}

impl SlaTimerView {
    fn of(timer: &Timer, catalog: &Catalog, now: DateTime<Utc>) -> Self {
        let business_seconds = catalog.counted(timer, now);
        Self {
            timer_id: timer.timer_id.clone(),
            metric: timer.metric,
            state: timer.state,
            breached: timer.breached_at.is_some(),
            breached_at: timer.breached_at,
            started_at: timer.started_at,
            due_at: timer.due_at,
            threshold_seconds: timer.clock.threshold_seconds,
            business_seconds,
            remaining_seconds: timer.clock.threshold_seconds - business_seconds,
            warnings_given: timer.warned.clone(),
            policy_id: timer.clock.policy_id,
            policy_version: timer.clock.policy_version,
            calendar_id: timer.clock.calendar_id,
            assignee_id: timer.assignee_id.clone(),
            stopped_at: timer.stopped_at,
        }
    }
}

/// A conversation's SLA clocks, as `GET /v1/conversations/{id}/sla` answers them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SlaView {
    /// The conversation.
    conversation_id: Uuid,
    /// The policy applied and its version; `null` when none applies.
    policy: Option<AppliedPolicy>,
    /// The conversation's version the clocks have seen.
    observed_version: u64,
    /// The running timer that comes due first, and when.
    next_due_at: Option<DateTime<Utc>>,
    /// Its id.
    next_due_timer: Option<String>,
    /// Every timer, in the order they started. Their events: `GET /v1/conversations/{id}/sla/events`.
    timers: Vec<SlaTimerView>,
    /// Each policy version's latest recomputed results (`POST /v1/sla-policies/{id}/recompute`),
    /// beside the live timers, in the order first recorded.
    recomputed: Vec<RecomputedView>,
}

/// A policy version's timers over the conversation's whole history, recomputed on request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecomputedView {
    /// The policy.
    policy_id: Uuid,
    /// Its version.
    policy_version: u32,
    /// The instant timers still running were judged at (their counted seconds are as of then).
    judged_at: DateTime<Utc>,
    /// The timers it gives the conversation, in the order they start.
    timers: Vec<SlaTimerView>,
}

fn sla_view(
    conversation_id: Uuid,
    clocks: &ConversationSla,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> SlaView {
    let next = clocks.next_due();
    SlaView {
        conversation_id,
        policy: clocks.policy.clone(),
        observed_version: clocks.observed,
        next_due_at: next.map(|(_, due)| due),
        next_due_timer: next.map(|(timer, _)| timer.timer_id.clone()),
        timers: clocks.timers.iter().map(|timer| SlaTimerView::of(timer, catalog, now)).collect(),
        recomputed: clocks
            .recomputed
            .iter()
            .map(|results| RecomputedView {
                policy_id: results.policy_id,
                policy_version: results.policy_version,
                judged_at: results.judged_at,
                timers: results
                    .timers
                    .iter()
                    .map(|timer| SlaTimerView::of(timer, catalog, results.judged_at))
                    .collect(),
            })
            .collect(),
    }
}

/// `GET /v1/conversations/{id}/sla`
#[utoipa::path(
    get,
    path = "/conversations/{id}/sla",
    tag = "conversations",
    summary = "Read a conversation's SLA clocks",
    description = "The policy applied (and its version) and every timer: its state, due time, business seconds counted and remaining. A conversation of a tenant without SLA policies has none. `ETag` is the SLA stream's version.",
    params(("id" = Uuid, Path, description = "The conversation's id.")),
    responses((status = 200, description = "Its SLA clocks.", body = SlaView))
)]
pub async fn conversation_sla(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(conversation_id): Path<Uuid>,
) -> Result<Versioned<SlaView>, ApiError> {
    require(&principal, "conversations:read")?;
    let id = conversation_id.to_string();
    let exists = state.conversations().read_settled(&principal.tenant, &id, |_| ()).await?;
    exists.ok_or_else(|| ApiError::not_found(format!("conversation {conversation_id}")))?;
    let catalog = catalog_table::catalog(state.store(), &principal.tenant).await?;
    let now = Utc::now();
    let found = state
        .clocks()
        .read(&principal.tenant, &id, |clocks, version| {
            (version, sla_view(conversation_id, clocks, &catalog, now))
        })
        .await?;
    let (version, view) =
        found.unwrap_or_else(|| (0, sla_view(conversation_id, &ConversationSla::default(), &catalog, now)));
    Ok(Versioned::ok(version, view))
}

/// `GET /v1/conversations/{id}/sla/events`
#[utoipa::path(
    get,
    path = "/conversations/{id}/sla/events",
    tag = "conversations",
    summary = "Read a conversation's SLA history",
    description = "The events of its SLA stream, in order: timers started, paused, resumed, retargeted, warned, breached, fulfilled and cancelled, and the policies applied.",
    params(("id" = Uuid, Path, description = "The conversation's id."), PageParams),
    responses((status = 200, description = "A page of the SLA stream's events.", body = Page<EventView>))
)]
pub async fn conversation_sla_events(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(conversation_id): Path<Uuid>,
    Query(page): Query<PageParams>,
) -> Result<axum::Json<Page<EventView>>, ApiError> {
    require(&principal, "conversations:read")?;
    stream_events(&state, &principal, "sla", conversation_id, &page).await.map(axum::Json)
}

/// Body of `POST /v1/conversations/{id}/sla`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"policy_id": "0190c6a4-7b1e-7c3d-9f00-000000000001"}))]
#[serde(deny_unknown_fields)]
pub struct ApplyPolicy {
    /// The policy to apply whatever the conditions say; `null` to let the conditions choose
    /// again.
    policy_id: Option<Uuid>,
}

/// `POST /v1/conversations/{id}/sla`
#[utoipa::path(
    post,
    path = "/conversations/{id}/sla",
    tag = "conversations",
    summary = "Apply an SLA policy to a conversation",
    description = "The policy's current version applies from now on, whatever the conditions say (until applied again with `null`). Live timers keep their start and run under its terms.",
    params(("id" = Uuid, Path, description = "The conversation's id.")),
    request_body = ApplyPolicy,
    responses(
        (status = 200, description = "Its SLA clocks now.", body = SlaView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn apply_policy(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(conversation_id): Path<Uuid>,
    Json(body): Json<ApplyPolicy>,
) -> Result<Versioned<SlaView>, ApiError> {
    require(&principal, "conversations:write")?;
    let catalog = catalog_table::catalog(state.store(), &principal.tenant).await?;
    let policy = match body.policy_id {
        None => None,
        Some(policy_id) => {
            let version = catalog.policies.iter().find(|p| p.version.policy_id == policy_id);
            let version: &PolicyVersion = &version
                .ok_or_else(|| {
                    let reason = format!("names no live SLA policy {policy_id}");
                    ApiError::invalid(colloquy_domain::validate::FieldError::new("policy_id", reason))
                })?
                .version;
            Some(version.clone())
        }
    };
    let now = Utc::now();
    let ask = Ask {
        scope: "conversations:write",
        kind: "conversation's SLA clocks",
        id: conversation_id,
        intent: Intent::Update,
        expected,
        command: SlaCommand::ApplyPolicy { policy, catalog: catalog.clone() },
    };
    let committed = command(state.clocks(), &principal, &headers, ask, |clocks: &ConversationSla, _| {
        sla_view(conversation_id, clocks, &catalog, now)
    })
    .await?;
    Ok(Versioned::changed(committed))
}
