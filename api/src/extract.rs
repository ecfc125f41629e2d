//! Extractors that answer bad input with problem+json: JSON bodies, path ids, query strings,
//! `If-Match`, and the bearer token.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use colloquy_domain::validate::FieldError;
use colloquy_infra::tokens::{self, Principal};

use crate::problem::ApiError;
use crate::state::AppState;

/// A JSON body; malformed, mistyped or non-JSON bodies become 400, 413 or 415 problems.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The bytes are kept to look for NUL characters after parsing; axum's extractor then
        // parses them with its own content-type check and messages.
        let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| json_problem(JsonRejection::BytesRejection(rejection)))?;
        let mut parsed = Request::new(axum::body::Body::from(bytes.clone()));
        if let Some(content_type) = content_type {
            parsed.headers_mut().insert(header::CONTENT_TYPE, content_type);
        }
        let axum::Json(value) = axum::Json::<T>::from_request(parsed, state).await.map_err(json_problem)?;
        if let Some(field) = field_with_nul(&bytes) {
            return Err(ApiError::invalid(FieldError::new(
                field,
                "must not contain the NUL character (\\u0000)",
            )));
        }
        Ok(Self(value))
    }
}

/// The field of a parsed JSON body that holds U+0000 in its value or in one of its keys, if
/// any. PostgreSQL stores no NUL in text or jsonb (an event's metadata and the read models'
/// columns), so such a body would fail only when its events are appended or projected;
/// refusing it here answers the same on both stores.
fn field_with_nul(json: &[u8]) -> Option<String> {
    // In valid JSON a NUL can only be the escape `\u0000`; skipping every escape pair keeps
    // `\\u0000` (a backslash, then "u0000") from counting.
    let mut index = 0;
    let mut found = false;
    while index < json.len() {
        if json[index] == b'\\' {
            if json[index + 1..].starts_with(b"u0000") {
                found = true;
                break;
            }
            index += 2;
        } else {
            index += 1;
        }
    }
    if !found {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    Some(path_to_nul(&value, String::new()).unwrap_or_else(|| "body".to_owned()))
}

fn path_to_nul(value: &serde_json::Value, path: String) -> Option<String> {
    let nested =
        |path: &str, name: &str| if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
    match value {
        serde_json::Value::String(text) => text.contains('\0').then_some(path),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(index, item)| path_to_nul(item, format!("{path}[{index}]")))
        }
        serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(if path.is_empty() { "body".to_owned() } else { path.clone() })
            } else {
                path_to_nul(item, nested(&path, key))
            }
        }),
        _ => None,
    }
}

fn json_problem(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(error) => {
            ApiError::bad_request(format!("the JSON body does not fit this request: {}", error.body_text()))
        }
        JsonRejection::JsonSyntaxError(error) => {
            ApiError::bad_request(format!("the body is not valid JSON: {}", error.body_text()))
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::unsupported_media_type("send the body as JSON with Content-Type: application/json")
        }
        JsonRejection::BytesRejection(error) => {
            if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(format!("the body is larger than {} bytes", crate::BODY_LIMIT))
            } else {
                ApiError::bad_request(error.body_text())
            }
        }
        other => ApiError::bad_request(other.body_text()),
    }
}

/// Largest oversized body read and thrown away before the 413, so the client, still sending it,
/// gets the answer instead of a reset connection; anything larger is refused at once.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// How long an oversized body may take to arrive before the 413 is sent anyway.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers 413 when `Content-Length` declares a body over [`crate::BODY_LIMIT`], before any
/// handler runs: the JSON extractor enforces the limit, but a route that reads no body would
/// otherwise run its command with one attached. A body up to [`DRAIN_LIMIT`] is read and dropped
/// first: closing a connection with unread data resets it, and the client would see a broken
/// pipe rather than the problem.
pub async fn refuse_oversized_bodies(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let Some(length) = declared.filter(|length| *length > crate::BODY_LIMIT as u64) else {
        return next.run(request).await;
    };
    if length <= DRAIN_LIMIT {
        let mut body = request.into_body().into_data_stream();
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(_chunk)) = futures::StreamExt::next(&mut body).await {}
        })
        .await;
    }
    let mut response =
        ApiError::payload_too_large(format!("the body is larger than {} bytes", crate::BODY_LIMIT))
            .into_response();
    response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

/// Path parameters; ids that are not UUIDs become a 400 naming the parameter.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => {
                Err(ApiError::bad_request(format!("{}; ids are UUIDs", error.body_text())))
            }
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

/// A query string; unknown or mistyped parameters become a 400.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(error)) => {
                Err(ApiError::bad_request(error.body_text()))
            }
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

/// The version an `If-Match` header names, if the request has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfMatch(pub Option<usize>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self(None));
        };
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("If-Match must be an ETag such as \"3\""))?
            .trim();
        if text == "*" {
            return Ok(Self(None));
        }
        // The shape the document states (`*`, or a quoted version of 1 to 18 digits): anything
        // else is a malformed request (400), answered before the body is read, not a 412.
        let tag = text.strip_prefix("W/").unwrap_or(text);
        let digits = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
        let version = digits
            .filter(|d| (1..=18).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<usize>().ok());
        match version {
            Some(version) => Ok(Self(Some(version))),
            None => Err(ApiError::bad_request(format!(
                "If-Match {text} is not an ETag this API issues: send * or a version such as \"3\""
            ))),
        }
    }
}

/// The `ETag` value of a version.
pub fn etag(version: usize) -> String {
    format!("\"{version}\"")
}

/// The caller, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <token>"))?;
        let secret = bearer_secret(header)
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be Bearer <token>"))?;
        let principal = state
            .authenticate(secret)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the token is unknown, expired or revoked"))?;
        Ok(Self(principal))
    }
}

/// The secret of an `Authorization: Bearer <secret>` header.
pub fn bearer_secret(header: &axum::http::HeaderValue) -> Option<&str> {
    header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
}

/// Checks a scope, answering 403 when the token lacks it.
pub fn require(principal: &Principal, scope: &str) -> Result<(), ApiError> {
    if principal.allows(scope) {
        Ok(())
    } else {
        Err(ApiError::forbidden(scope))
    }
}

/// Re-exported so handlers need one import.
pub use tokens::ADMIN_SCOPE;
