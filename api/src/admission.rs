//! Admission: a cap on the API requests handled at once. Past it a request is answered 503 with
//! `Retry-After` at once instead of waiting in memory: a client that sends faster than the
//! server answers (an open-loop load, a retry storm) would otherwise grow the server's memory
//! without bound, a connection and a request each (docs/benchmarks/lab-notes.md, "The aggregate
//! cache bounded by memory", saw 1.47 GB). Health, readiness and metrics are not capped, so an overloaded
//! server still says how it is.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;
use crate::state::AppState;

/// Runs an API request if fewer than the configured number are in flight; 503 otherwise.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let (permits, limit) = state.admission();
    match permits.clone().try_acquire_owned() {
        Ok(_in_flight) => next.run(request).await,
        Err(_) => {
            state.metrics().count_overloaded();
            ApiError::overloaded(limit).into_response()
        }
    }
}
