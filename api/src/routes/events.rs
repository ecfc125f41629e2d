//! `GET /v1/events`: the tenant's slice of the global log, in order, for reporting services and
//! tailers: `after=P` returns the events with positions above P.

use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::extract::{require, Auth, Query};
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::EventView;

/// Most events one page of the log returns.
pub const MAX_LOG_LIMIT: i64 = 1000;

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Return events after this global position (0: from the start).
    #[serde(default)]
    #[param(minimum = 0)]
    after: i64,
    /// Events per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// A page of the log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogPage {
    data: Vec<EventView>,
    /// Pass as `after` to continue: the last position returned, or `after` itself when the page
    /// is empty.
    last_position: i64,
}

/// `GET /v1/events?after=P&limit=N`
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    summary = "Read the tenant's global log",
    description = "The tenant's events in global order, after a position: for reporting services and tailers.",
    params(LogQuery),
    responses((status = 200, description = "A page of the log.", body = LogPage))
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<LogQuery>,
) -> Result<axum::Json<LogPage>, ApiError> {
    require(&principal, "events:read")?;
    let limit = match query.limit {
        None => 100,
        Some(n) if (1..=MAX_LOG_LIMIT).contains(&n) => n,
        Some(_) => return Err(ApiError::invalid_field("limit", format!("must be 1 to {MAX_LOG_LIMIT}"))),
    };
    if query.after < 0 {
        return Err(ApiError::invalid_field("after", "must be 0 or more"));
    }
    let events = state.log().read(query.after, limit, Some(&principal.tenant)).await?;
    let last_position = events.last().and_then(|e| e.position).unwrap_or(query.after);
    Ok(axum::Json(LogPage { data: events.into_iter().map(EventView::from).collect(), last_position }))
}
