//! The one mapping from errors to HTTP: RFC 9457 problem+json bodies with the status, a title,
//! a sentence a person can act on, and for invalid fields the field names. Internal details are
//! logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use colloquy_domain::validate::FieldError;
use colloquy_domain::{ContactError, ConversationError, GroupError};
use colloquy_infra::CommandError;
use cqrs_es::persist::PersistenceError;

/// An error on its way to becoming a problem+json response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    retry_after: Option<u64>,
}

/// The body of every error answer (RFC 9457), as the OpenAPI document describes it too.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub(crate) struct Problem<'a> {
    /// A URN naming the kind of problem, e.g. `urn:colloquy:problem:not-found`; stable, so
    /// clients can branch on it.
    #[serde(rename = "type")]
    problem_type: String,
    /// A short summary of the kind of problem.
    title: &'a str,
    /// The HTTP status.
    status: u16,
    /// A sentence a person can act on.
    detail: &'a str,
    /// For invalid fields: each field and what is wrong with it.
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl ApiError {
    fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, slug, title, detail: detail.into(), errors: Vec::new(), retry_after: None }
    }

    /// 400: the request cannot be understood as sent.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed-request", "Malformed request", detail)
    }

    /// 400 naming one invalid field of the request.
    pub fn invalid_field(field: &str, reason: impl Into<String>) -> Self {
        let error = FieldError::new(field, reason);
        let mut problem = Self::bad_request(error.to_string());
        problem.errors.push(error);
        problem
    }

    /// 401: no valid token.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail)
    }

    /// 403: the token lacks a scope.
    pub fn forbidden(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!("this token lacks the scope {scope:?}"),
        )
    }

    /// 404: nothing here for this tenant.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", format!("{} was not found", what.into()))
    }

    /// 405: the route exists with other methods.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this route does not accept this method",
        )
    }

    /// 410: the resource was deleted; its history stays readable.
    pub fn gone(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "gone", "Gone", detail)
    }

    /// 413: the body is over the limit.
    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large", detail)
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail,
        )
    }

    /// 422: the domain refused the command.
    pub fn refused(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "command-refused", "Command refused", detail)
    }

    /// 422 for a field that is well formed but cannot be taken as it is (a rule across fields,
    /// or of the present), naming it.
    pub fn unacceptable_field(field: &str, reason: impl Into<String>) -> Self {
        Self::invalid(FieldError::new(field, reason))
    }

    /// 422 for a field the domain found invalid.
    pub fn invalid(error: FieldError) -> Self {
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
            "Validation failed",
            error.to_string(),
        );
        problem.errors.push(error);
        problem
    }

    /// 409: a conflict with the current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    /// 412: the If-Match version is not the current one.
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, "precondition-failed", "Precondition failed", detail)
    }

    /// 503: a dependency is unavailable; try again.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut problem =
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail);
        problem.retry_after = Some(1);
        problem
    }

    /// 429: a token has as many event streams open as it may.
    pub fn too_many_streams(limit: usize) -> Self {
        let mut problem = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-streams",
            "Too many streams",
            format!("this token already has {limit} event streams open; close one first"),
        );
        problem.retry_after = Some(1);
        problem
    }

    /// 503: the server already handles as many requests as it takes at once.
    pub fn overloaded(limit: usize) -> Self {
        let mut problem = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
            format!("the server is handling as many requests as it takes at once ({limit}); retry shortly"),
        );
        problem.retry_after = Some(1);
        problem
    }

    /// 500, after logging what went wrong; the client is told nothing internal.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::internal_answer()
    }

    /// The 500 a client sees, without logging anything (for the OpenAPI document's example).
    pub(crate) fn internal_answer() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "Internal error",
            "something went wrong on our side; it has been logged",
        )
    }

    /// The human-readable explanation.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl ApiError {
    fn problem(&self) -> Problem<'_> {
        Problem {
            problem_type: format!("urn:colloquy:problem:{}", self.slug),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            errors: &self.errors,
        }
    }

    /// The problem+json body this error answers with (the OpenAPI document's examples are made
    /// with it, so they show real answers).
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(self.problem()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<ContactError> for ApiError {
    fn from(error: ContactError) -> Self {
        match error {
            ContactError::NotFound => Self::not_found("the contact"),
            ContactError::AlreadyExists(_) => Self::conflict(error.to_string()),
            ContactError::Invalid(field) => Self::invalid(field),
            ContactError::Deleted(_) | ContactError::Erased(_) => Self::refused(error.to_string()),
        }
    }
}

impl From<ConversationError> for ApiError {
    fn from(error: ConversationError) -> Self {
        match error {
            ConversationError::NotFound => Self::not_found("the conversation"),
            ConversationError::AlreadyExists(_) | ConversationError::DuplicateMessage(_) => {
                Self::conflict(error.to_string())
            }
            ConversationError::UnknownMessage(id) => Self::not_found(format!("message {id}")),
            ConversationError::Invalid(field) => Self::invalid(field),
            other => Self::refused(other.to_string()),
        }
    }
}

impl From<GroupError> for ApiError {
    fn from(error: GroupError) -> Self {
        match error {
            GroupError::NotFound => Self::not_found("the group"),
            GroupError::AlreadyExists(_) => Self::conflict(error.to_string()),
            // The member is the resource a `/members/{contact_id}` path names.
            GroupError::NotAMember(id) => Self::not_found(format!("member {id} of this group")),
            GroupError::Invalid(field) => Self::invalid(field),
            other => Self::refused(other.to_string()),
        }
    }
}

impl From<colloquy_domain::definition::DefinitionError> for ApiError {
    fn from(error: colloquy_domain::definition::DefinitionError) -> Self {
        use colloquy_domain::definition::DefinitionError;
        match error {
            DefinitionError::NotFound => Self::not_found("the resource"),
            DefinitionError::AlreadyExists(_) => Self::conflict(error.to_string()),
            DefinitionError::Deleted(_) => Self::refused(error.to_string()),
            DefinitionError::Invalid(field) => Self::invalid(field),
        }
    }
}

impl From<colloquy_domain::sla::SlaError> for ApiError {
    fn from(error: colloquy_domain::sla::SlaError) -> Self {
        match error {
            colloquy_domain::sla::SlaError::NotFound => Self::not_found("the conversation's SLA clocks"),
        }
    }
}

impl From<PersistenceError> for ApiError {
    fn from(error: PersistenceError) -> Self {
        match error {
            PersistenceError::ConnectionError(e) => {
                tracing::warn!(error = %e, "store unavailable");
                Self::unavailable("the event store is unavailable; try again shortly")
            }
            other => Self::internal(&other),
        }
    }
}

impl From<colloquy_infra::StoreError> for ApiError {
    fn from(error: colloquy_infra::StoreError) -> Self {
        match error {
            colloquy_infra::StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                tracing::warn!(%error, "store unavailable");
                Self::unavailable("the event store is unavailable; try again shortly")
            }
            other => Self::internal(&other),
        }
    }
}

/// Turns a failed command into its problem, naming `what` (e.g. "conversation <id>") when the
/// aggregate is not there.
pub fn command_failed<E>(error: CommandError<E>, what: impl std::fmt::Display) -> ApiError
where
    E: std::error::Error,
    ApiError: From<E>,
{
    match error {
        CommandError::NotFound => ApiError::not_found(what.to_string()),
        other => other.into(),
    }
}

impl<E> From<CommandError<E>> for ApiError
where
    E: std::error::Error,
    ApiError: From<E>,
{
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::NotFound => Self::not_found("the resource"),
            CommandError::Rejected(refusal) => refusal.into(),
            CommandError::VersionMismatch { expected, actual } => Self::precondition_failed(format!(
                "If-Match names version {expected}, but the current version is {actual}; fetch it again and retry"
            )),
            CommandError::Conflict => Self::conflict(
                "the resource kept changing under concurrent writes; retry the request",
            ),
            CommandError::Store(error) => error.into(),
        }
    }
}
