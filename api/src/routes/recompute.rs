//! `POST /v1/sla-policies/{id}/recompute`: a stored policy version replayed over the history of
//! the conversations opened in a time range, as a what-if does, and its timers recorded on each
//! conversation's SLA clocks beside the live ones (docs/adr/0008).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use colloquy_domain::sla::whatif::Outcome;
use colloquy_domain::sla::{Recomputed, SlaCommand};
use colloquy_domain::validate::FieldError;
use colloquy_infra::Intent;

use crate::extract::{require, Auth, Json, Path};
use crate::problem::{command_failed, ApiError};
use crate::routes::whatif::{checked_range, replay, stored_policy};
use crate::state::AppState;

/// Body of `POST /v1/sla-policies/{id}/recompute`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"version": 2, "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}))]
#[serde(deny_unknown_fields)]
pub struct Recompute {
    /// The version to recompute under (its current one when absent).
    #[serde(default, deserialize_with = "colloquy_domain::whole::optional_int")]
    #[schema(minimum = 1)]
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

/// What a recompute recorded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecomputeResult {
    /// The policy.
    policy_id: Uuid,
    /// The version its results were recomputed under.
    version: u32,
    /// The instant still-running timers were judged at (now).
    judged_at: DateTime<Utc>,
    /// Conversations replayed.
    conversations: usize,
    /// Of those, the ones the version's conditions cover: each has its results recorded.
    covered: usize,
    /// Of those, the ones whose results changed (an event each); the others had these already.
    recorded: usize,
    /// Whether more conversations were opened in the range than `limit`: recompute again from
    /// `next_from`.
    truncated: bool,
    /// Where the range's next recompute starts, when truncated: the last replayed
    /// conversation's opening.
    next_from: Option<DateTime<Utc>>,
    /// Hits, misses, still running and other, per metric.
    by_metric: BTreeMap<String, Outcome>,
}

/// `POST /v1/sla-policies/{id}/recompute`
#[utoipa::path(
    post,
    path = "/sla-policies/{id}/recompute",
    tag = "sla",
    summary = "Recompute past conversations' SLA results under a policy version",
    description = "Replays the policy at `version` (its current one when absent), as a what-if does, over the full history of the conversations opened in `[from, to)` that its conditions cover, and records the timers it gives each as an `SlaResultsRecomputed` event on the conversation's SLA stream. The live timers keep the terms they ran under, and earlier results stay in the stream: `GET /v1/conversations/{id}/sla` shows each version's latest results under `recomputed`. Recording the same results again records nothing.",
    params(("id" = Uuid, Path, description = "The policy's id.")),
    request_body = Recompute,
    responses(
        (status = 200, description = "What was recorded.", body = RecomputeResult),
        (status = 404, response = crate::openapi::NotFound),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn recompute(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Path(policy_id): Path<Uuid>,
    Json(body): Json<Recompute>,
) -> Result<axum::Json<RecomputeResult>, ApiError> {
    require(&principal, "settings:write")?;
    let origin = crate::routes::origin(&principal, &headers)?;
    let limit = checked_range(body.limit, body.from, body.to)?;
    if body.version == Some(0) {
        return Err(ApiError::invalid(FieldError::new("version", "must be 1 or more")));
    }
    let policy = stored_policy(&state, &principal, policy_id, body.version).await?.ok_or_else(|| {
        ApiError::not_found(match body.version {
            Some(version) => format!("SLA policy {policy_id} has no version {version}"),
            None => format!("SLA policy {policy_id}"),
        })
    })?;
    let replayed = replay(&state, &principal.tenant, &policy, (body.from, body.to), limit).await?;
    let next_from = if replayed.truncated {
        let last = replayed.conversations.last().map(|(id, _)| id.as_str());
        match last {
            Some(id) => {
                colloquy_projections::conversation_list::get(state.store(), principal.tenant.as_str(), id)
                    .await?
                    .map(|row| row.created_at)
            }
            None => None,
        }
    } else {
        None
    };
    let (conversations, mut covered, mut recorded) = (replayed.conversations.len(), 0, 0);
    let mut by_metric: BTreeMap<String, Outcome> = BTreeMap::new();
    for (id, clocks) in replayed.conversations {
        if clocks.policy.is_none() {
            continue;
        }
        covered += 1;
        for timer in &clocks.timers {
            by_metric.entry(timer.metric.as_str().to_owned()).or_default().count(timer);
        }
        let results = Recomputed {
            tenant_id: principal.tenant.clone(),
            policy_id,
            policy_version: policy.version,
            judged_at: replayed.judged_at,
            timers: clocks.timers,
        };
        let committed = state
            .clocks()
            .execute(&id, SlaCommand::RecordResults(results), Intent::Create, None, &origin, |_, _| ())
            .await
            .map_err(|e| command_failed(e, format!("conversation's SLA clocks {id}")))?;
        recorded += usize::from(!committed.events.is_empty());
    }
    Ok(axum::Json(RecomputeResult {
        policy_id,
        version: policy.version,
        judged_at: replayed.judged_at,
        conversations,
        covered,
        recorded,
        truncated: replayed.truncated,
        next_from,
        by_metric,
    }))
}
