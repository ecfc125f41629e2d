//! `POST /v1/sla-policies/what-if`: replays a draft policy (or a stored one at any version) over
//! the history of the conversations opened in a time range, with the live clocks' own rules, and
//! answers the hits, misses and per-conversation timers it would have had. Nothing is written.

use std::collections::BTreeMap;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use colloquy_domain::definition::Definition;
use colloquy_domain::sla::whatif::{self, Outcome};
use colloquy_domain::sla::{Catalog, ConversationSla, Metric, PolicyVersion, SlaPolicy, TimerState};
use colloquy_domain::validate::FieldError;
use colloquy_domain::{Conversation, ConversationEvent, ConversationId};
use colloquy_projections::conversation_list as query;
use colloquy_projections::sla::definitions as catalog_table;

use crate::extract::{require, Auth, Json};
use crate::problem::ApiError;
use crate::state::AppState;

/// The most conversations one what-if replays.
pub const MAX_CONVERSATIONS: u32 = 2_000;

/// Body of `POST /v1/sla-policies/what-if`: a draft `policy`, or a stored `policy_id` (at
/// `version`, its current one when absent).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"policy": {"name": "Draft", "targets": [{"metric": "first_response", "threshold_seconds": 1800}]},
    "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "limit": 500}))]
#[serde(deny_unknown_fields)]
pub struct WhatIf {
    /// A policy to judge, not stored.
    policy: Option<SlaPolicy>,
    /// Or a stored policy.
    policy_id: Option<Uuid>,
    /// The stored policy's version.
    #[serde(default, deserialize_with = "colloquy_domain::whole::optional_int")]
    version: Option<u32>,
    /// The conversations opened at or after this instant...
    from: DateTime<Utc>,
    /// ...and before this one.
    to: DateTime<Utc>,
    /// At most this many conversations, oldest first (default 500, at most 2,000).
    #[schema(minimum = 1, maximum = 2000)]
    #[serde(default, deserialize_with = "colloquy_domain::whole::optional_int")]
    limit: Option<u32>,
}

/// One timer a replayed conversation would have had.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhatIfTimer {
    timer_id: String,
    metric: Metric,
    state: TimerState,
    /// When it would have breached; `null` when it would not have.
    breached_at: Option<DateTime<Utc>>,
    /// Clock seconds it would have counted by its end (or by now, still running).
    business_seconds: i64,
    threshold_seconds: i64,
}

/// One replayed conversation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhatIfConversation {
    conversation_id: String,
    /// Whether the policy's conditions would have applied it.
    covered: bool,
    timers: Vec<WhatIfTimer>,
}

/// What the policy would have had.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhatIfResult {
    /// The stored policy's version replayed; `null` for a draft.
    version: Option<u32>,
    /// The instant still-running timers were judged at (now).
    judged_at: DateTime<Utc>,
    /// Conversations replayed.
    conversations: usize,
    /// Of those, the ones the policy would have applied to.
    covered: usize,
    /// Whether more conversations were opened in the range than `limit`.
    truncated: bool,
    /// Hits, misses, still running and other, per metric.
    by_metric: BTreeMap<String, Outcome>,
    /// Each conversation's timers, oldest conversation first.
    results: Vec<WhatIfConversation>,
}

/// `POST /v1/sla-policies/what-if`
#[utoipa::path(
    post,
    path = "/sla-policies/what-if",
    tag = "sla",
    summary = "Replay a policy over past conversations",
    description = "Replays a draft policy (or a stored one at any version), as if it had always been in force and the only one, over the full history of the conversations opened in `[from, to)`, with the clocks' own rules and the calendars as they are now. Answers the hits, misses and each conversation's timers it would have had. Writes nothing.",
    request_body = WhatIf,
    responses(
        (status = 200, description = "What the policy would have had.", body = WhatIfResult),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn what_if(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: axum::http::HeaderMap,
    Json(body): Json<WhatIf>,
) -> Result<axum::Json<WhatIfResult>, ApiError> {
    require(&principal, "settings:write")?;
    // Nothing is written, but the command headers are held to their rules as on every command.
    crate::routes::origin(&principal, &headers)?;
    let limit = checked_range(body.limit, body.from, body.to)?;
    let (policy, version) = policy_to_judge(&state, &principal, &body).await?;
    let replayed = replay(&state, &principal.tenant, &policy, (body.from, body.to), limit).await?;
    let judged_at = replayed.judged_at;
    let mut by_metric: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut results = Vec::with_capacity(replayed.conversations.len());
    for (id, clocks) in replayed.conversations {
        for timer in &clocks.timers {
            by_metric.entry(timer.metric.as_str().to_owned()).or_default().count(timer);
        }
        results.push(WhatIfConversation {
            conversation_id: id,
            covered: clocks.policy.is_some(),
            timers: clocks
                .timers
                .iter()
                .map(|timer| WhatIfTimer {
                    timer_id: timer.timer_id.clone(),
                    metric: timer.metric,
                    state: timer.state,
                    breached_at: timer.breached_at,
                    business_seconds: replayed.catalog.counted(timer, judged_at),
                    threshold_seconds: timer.clock.threshold_seconds,
                })
                .collect(),
        });
    }
    let truncated = replayed.truncated;
    let covered = results.iter().filter(|r| r.covered).count();
    Ok(axum::Json(WhatIfResult {
        version,
        judged_at,
        conversations: results.len(),
        covered,
        truncated,
        by_metric,
        results,
    }))
}

/// The draft, or the stored policy at the asked version.
async fn policy_to_judge(
    state: &AppState,
    principal: &colloquy_infra::tokens::Principal,
    body: &WhatIf,
) -> Result<(PolicyVersion, Option<u32>), ApiError> {
    match (&body.policy, body.policy_id) {
        (Some(draft), None) => {
            let policy = draft.clone().validated().map_err(ApiError::invalid)?;
            Ok((PolicyVersion { policy_id: Uuid::nil(), version: 0, policy }, None))
        }
        (None, Some(policy_id)) => {
            let policy =
                stored_policy(state, principal, policy_id, body.version).await?.ok_or_else(|| {
                    ApiError::invalid(FieldError::new(
                        "policy_id",
                        format!("names no SLA policy {policy_id} at that version"),
                    ))
                })?;
            let version = policy.version;
            Ok((policy, Some(version)))
        }
        _ => Err(ApiError::invalid(FieldError::new("policy", "give either a draft policy or a policy_id"))),
    }
}

/// The stored policy `policy_id` at `version` (its current one when `None`); `None` when it has
/// no such version (or was deleted, for its current one).
pub async fn stored_policy(
    state: &AppState,
    principal: &colloquy_infra::tokens::Principal,
    policy_id: Uuid,
    version: Option<u32>,
) -> Result<Option<PolicyVersion>, ApiError> {
    let found = state
        .policies()
        .read(&principal.tenant, &policy_id.to_string(), |defined, _| {
            match version {
                Some(version) => defined.revision(version),
                None => defined.current(),
            }
            .map(|revision| PolicyVersion {
                policy_id,
                version: revision.version,
                policy: revision.definition.clone(),
            })
        })
        .await?;
    Ok(found.flatten())
}

/// The conversations a range of a replay takes (`limit`, 500 by default), once `from` and `to`
/// are checked.
pub fn checked_range(limit: Option<u32>, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(500);
    if !(1..=MAX_CONVERSATIONS).contains(&limit) {
        return Err(ApiError::invalid(FieldError::new("limit", format!("must be 1 to {MAX_CONVERSATIONS}"))));
    }
    if from >= to {
        return Err(ApiError::invalid(FieldError::new("to", "must be after from")));
    }
    Ok(limit as usize)
}

/// The clocks a policy gives each conversation of a range, replayed.
#[derive(Debug)]
pub struct Replayed {
    /// The instant still-running timers were judged at (now).
    pub judged_at: DateTime<Utc>,
    /// Whether more conversations were opened in the range than the limit.
    pub truncated: bool,
    /// The tenant's calendars, as the replay read them (and no policy).
    pub catalog: Catalog,
    /// Each conversation's id and clocks, oldest first.
    pub conversations: Vec<(String, ConversationSla)>,
}

/// Replays `policy`, as if it had always been in force and the only one, over the full history
/// of at most `limit` conversations of `tenant` opened in `range`, oldest first.
pub async fn replay(
    state: &AppState,
    tenant: &colloquy_domain::TenantId,
    policy: &PolicyVersion,
    range: (DateTime<Utc>, DateTime<Utc>),
    limit: usize,
) -> Result<Replayed, ApiError> {
    let mut catalog = catalog_table::catalog(state.store(), tenant).await?;
    catalog.policies.clear();
    let mut ids = query::opened_between(state.store(), tenant.as_str(), range, limit + 1).await?;
    let truncated = ids.len() > limit;
    ids.truncate(limit);
    let judged_at = Utc::now();
    let mut conversations = Vec::with_capacity(ids.len());
    for id in ids {
        let Ok(conversation_id) = id.parse::<ConversationId>() else { continue };
        let events = history(state, tenant, &id).await?;
        let clocks = whatif::simulate(
            conversation_id,
            tenant.clone(),
            events,
            policy.clone(),
            catalog.calendars.clone(),
            judged_at,
        );
        conversations.push((id, clocks));
    }
    Ok(Replayed { judged_at, truncated, catalog, conversations })
}

/// Every event of one conversation, in order, with its sequence.
async fn history(
    state: &AppState,
    tenant: &colloquy_domain::TenantId,
    id: &str,
) -> Result<Vec<(u64, ConversationEvent)>, ApiError> {
    let mut events = Vec::new();
    let mut after = 0usize;
    loop {
        let page = state.store().load_page::<Conversation>(tenant, id, after).await?;
        for stored in &page.events {
            let event = stored.decode::<ConversationEvent>().map_err(|e| ApiError::internal(&e))?;
            after = usize::try_from(stored.sequence).unwrap_or(after);
            events.push((after as u64, event));
        }
        if !page.more || page.events.is_empty() {
            return Ok(events);
        }
    }
}
