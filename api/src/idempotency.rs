//! `Idempotency-Key` on commands: a POST retried with the same key and the same request gets
//! the first response again (same ids, same status) and appends nothing; the same key with a
//! different request is a 422. Keys belong to the token that sent them (within its tenant),
//! kept 24 hours in the store, so they survive restarts, and purged by a task of every serving
//! process (see infra/src/idempotency.rs).
//!
//! Responses worth replaying are stored: successes and the refusals a retry would meet again
//! (404, 410, 422). Anything else (bad input, auth, conflicts, 5xx) releases the key, so a
//! corrected or later retry runs. A response that carries a secret (a new token's, a webhook's
//! signing secret at its creation or rotation) is never stored: its replay says what the request
//! did, and that the secret is not kept.

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

/// Put in a response's extensions by a handler whose body holds a secret shown only once: the
/// body is not stored, and a replay answers 409 naming the resource (`Location`) and what to do
/// if the secret was lost.
#[derive(Debug, Clone)]
pub struct HoldsSecret {
    /// The resource the secret belongs to (`/v1/tokens/{id}`).
    pub resource: String,
    /// What a client that lost the secret does, as a sentence's end ("revoke it and create
    /// another").
    pub remedy: &'static str,
}

impl HoldsSecret {
    /// Marks `response` as holding the secret of `resource`.
    pub fn mark(mut response: Response, resource: String, remedy: &'static str) -> Response {
        response.extensions_mut().insert(Self { resource, remedy });
        response
    }
}

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
    // Headers a retry could not fix are checked before the key is looked at, so a malformed one
    // is a 400 even where the key's first response would otherwise be replayed.
    if let Err(error) = crate::routes::origin(&principal, &parts.headers) {
        return error.into_response();
    }
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
    // A key is the token's own: another token of the tenant using the same key runs its own
    // request, through its own scope check, and never sees this one's response. A token's
    // scopes never change (a token is revoked, not edited), so a replay to the token that made
    // the request passes the scope check the request passed.
    let key_of_token = format!("{}/{key}", principal.token_id);
    let store = state.store().clone();
    match idempotency::claim(&store, &tenant, &key_of_token, &request_hash, Utc::now()).await {
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
                if let Err(error) = idempotency::release(&store, &tenant, &key_of_token).await {
                    tracing::warn!(%error, "could not release an idempotency key");
                }
                return response;
            }
            let (parts, body) = response.into_parts();
            let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
                return ApiError::internal(&"the response body could not be read").into_response();
            };
            let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let stored = if let Some(secret) = parts.extensions.get::<HoldsSecret>() {
                secret_withheld(&key, secret).await
            } else {
                let headers = REPLAYED_HEADERS
                    .iter()
                    .filter_map(|name| header(name).map(|value| ((*name).to_owned(), value)))
                    .collect();
                StoredResponse { status: status.as_u16(), headers, body: body.to_vec() }
            };
            if let Err(error) = idempotency::complete(&store, &tenant, &key_of_token, &stored).await {
                // The command is committed; a retry will find the key still claimed and answer
                // 409 until the claim is considered abandoned.
                tracing::warn!(%error, "could not store an idempotent response");
            }
            Response::from_parts(parts, Body::from(body))
        }
    }
}

/// What is stored for a response whose body holds a secret: a 409 that names the resource, so a
/// retry learns that the request was done, without the secret ever reaching the store.
async fn secret_withheld(key: &str, secret: &HoldsSecret) -> StoredResponse {
    let HoldsSecret { resource, remedy } = secret;
    let problem = ApiError::conflict(format!(
        "the request with Idempotency-Key {key:?} was done already ({resource}); the secret it answered with \
         was shown once and is not kept: {remedy} if it was lost"
    ));
    let (parts, body) = problem.into_response().into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.map(|b| b.to_vec()).unwrap_or_default();
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(content_type) = parts.headers.get("content-type").and_then(|v| v.to_str().ok()) {
        headers.push(("content-type".into(), content_type.to_owned()));
    }
    headers.push(("location".into(), resource.clone()));
    StoredResponse { status: parts.status.as_u16(), headers, body }
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
