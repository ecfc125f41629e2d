//! `Idempotency-Key` on commands: a POST retried with the same key and the same request gets
//! the first response again (same ids, same status) and appends nothing; the same key with a
//! different request is a 422. Keys are per tenant, kept 24 hours in the store, so they survive
//! restarts (see infra/src/idempotency.rs).
//!
//! Responses worth replaying are stored: successes and the refusals a retry would meet again
//! (404, 410, 422). Anything else (bad input, auth, conflicts, 5xx) releases the key, so a
//! corrected or later retry runs.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sha2::{Digest, Sha256};

use colloquy_infra::idempotency::{self, Claim, StoredResponse};

use crate::extract::Auth;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::BODY_LIMIT;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Set on a replayed response.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest key accepted.
pub const MAX_KEY_LENGTH: usize = 255;

const REPLAYED_HEADERS: [&str; 4] = ["content-type", "location", "etag", "colloquy-position"];

fn worth_keeping(status: StatusCode) -> bool {
    status.is_success() || matches!(status.as_u16(), 404 | 410 | 422)
}

/// The middleware.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(raw_key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let key = match raw_key.to_str() {
        Ok(key)
            if !key.is_empty()
                && key.len() <= MAX_KEY_LENGTH
                && key.chars().all(|c| c.is_ascii_graphic()) =>
        {
            key.to_owned()
        }
        _ => {
            return ApiError::invalid_field(
                "Idempotency-Key",
                format!("must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"),
            )
            .into_response()
        }
    };
    let (mut parts, body) = request.into_parts();
    // The tenant scopes the key. Without a valid token the handler answers 401 as usual.
    let principal = match Auth::from_request_parts(&mut parts, &state).await {
        Ok(Auth(principal)) => principal,
        Err(_) => return next.run(Request::from_parts(parts, body)).await,
    };
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return ApiError::payload_too_large(format!("the body exceeds {BODY_LIMIT} bytes")).into_response();
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(parts.uri.query().unwrap_or("").as_bytes());
    hasher.update([0]);
    hasher.update(&bytes);
    let request_hash = hex::encode(hasher.finalize());
    let tenant = principal.tenant.as_str().to_owned();
    let store = state.store().clone();
    match idempotency::claim(&store, &tenant, &key, &request_hash, Utc::now()).await {
        Err(error) => ApiError::from(error).into_response(),
        Ok(Claim::Mismatch) => ApiError::refused(format!(
            "Idempotency-Key {key:?} was already used with a different request; use a new key for a new request"
        ))
        .into_response(),
        Ok(Claim::InProgress) => {
            ApiError::conflict(format!("a request with Idempotency-Key {key:?} is still running; retry shortly"))
                .into_response()
        }
        Ok(Claim::Replay(stored)) => replay(stored),
        Ok(Claim::Claimed) => {
            let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            let status = response.status();
            if !worth_keeping(status) {
                if let Err(error) = idempotency::release(&store, &tenant, &key).await {
                    tracing::warn!(%error, "could not release an idempotency key");
                }
                return response;
            }
            let (parts, body) = response.into_parts();
            let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
                return ApiError::internal(&"the response body could not be read").into_response();
            };
            let headers = REPLAYED_HEADERS
                .iter()
                .filter_map(|name| {
                    parts.headers.get(*name).and_then(|v| v.to_str().ok()).map(|v| ((*name).to_owned(), v.to_owned()))
                })
                .collect();
            let stored = StoredResponse { status: status.as_u16(), headers, body: body.to_vec() };
            if let Err(error) = idempotency::complete(&store, &tenant, &key, &stored).await {
                // The command is committed; a retry will find the key still claimed and answer
                // 409 until the claim is considered abandoned.
                tracing::warn!(%error, "could not store an idempotent response");
            }
            Response::from_parts(parts, Body::from(body))
        }
    }
}

fn replay(stored: StoredResponse) -> Response {
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
