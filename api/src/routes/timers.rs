//! `GET /v1/timers?conversation_id=`: what the process managers have scheduled for a
//! conversation (its snooze wake-up, and next its SLA timers), for operators.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use colloquy_projections::processes;

use crate::extract::{require, Auth, Query};
use crate::problem::ApiError;
use crate::state::AppState;

/// Query of `GET /v1/timers`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TimersQuery {
    /// The conversation whose timers to show.
    conversation_id: Uuid,
}

/// A job a process manager still has to do: a timer when it has a due time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimerView {
    /// The process that will act (`snooze_timers`, `group_conversations`, `sla` for the SLA
    /// clocks' observe jobs, `sla_fire` for their deadlines).
    process: String,
    /// Its id within the process.
    id: String,
    /// What it acts on: `conversation/<id>`.
    subject: Option<String>,
    /// When it is due; `null` for at once.
    due_at: Option<DateTime<Utc>>,
    /// How many times it was tried.
    attempts: i32,
    /// Why the last try failed, if it did.
    last_error: Option<String>,
}

/// The timers of one subject.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Timers {
    /// Earliest due first.
    data: Vec<TimerView>,
}

/// `GET /v1/timers?conversation_id=`
#[utoipa::path(
    get,
    path = "/timers",
    tag = "timers",
    summary = "Show a conversation's timers",
    description = "The jobs the process managers have pending for a conversation, each with its due time: a timed snooze's wake-up. Read from the store as it stands, not from a projection's lag.",
    params(TimersQuery),
    responses((status = 200, description = "Its pending timers, earliest due first.", body = Timers))
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<TimersQuery>,
) -> Result<axum::Json<Timers>, ApiError> {
    require(&principal, "conversations:read")?;
    let subject = format!("conversation/{}", query.conversation_id);
    let pending = processes::pending_on(state.store(), &principal.tenant, &subject).await?;
    let data = pending
        .into_iter()
        .map(|job| TimerView {
            process: job.process,
            id: job.job_id,
            subject: job.subject,
            due_at: job.due_at,
            attempts: job.attempts,
            last_error: job.last_error,
        })
        .collect();
    Ok(axum::Json(Timers { data }))
}
