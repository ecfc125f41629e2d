//! The HTTP routes, one file per resource, and what they share: the one shape of a command
//! endpoint ([`command`]: scope, origin, run, refusal mapped to its status), building a
//! command's origin from the caller and the request, and answering with a version.

pub mod audit;
pub mod calendars;
pub mod contacts;
pub mod conversations;
pub mod definitions;
pub mod events;
pub mod groups;
pub mod health;
pub mod inbox;
pub mod inbox_row;
pub mod messages;
pub mod recompute;
pub mod reports;
pub mod revert;
pub mod sla;
pub mod stream;
pub mod timers;
pub mod tokens;
pub mod webhooks;
pub mod whatif;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use colloquy_domain::{Actor, ActorKind, CommandContext, Footprint, Snapshot, TenantOwned};
use colloquy_infra::tokens::Principal;
use colloquy_infra::{Committed, Intent, Origin, Repository};

use crate::extract::{etag, require};
use crate::problem::{command_failed, ApiError};

/// What a command endpoint asks of one aggregate of the caller's tenant.
#[derive(Debug)]
pub struct Ask<C> {
    /// The scope the token needs.
    pub scope: &'static str,
    /// What the aggregate is called in a problem's detail (`conversation`, `group`, `contact`).
    pub kind: &'static str,
    /// Its id.
    pub id: Uuid,
    /// Whether the command creates it or changes an existing one.
    pub intent: Intent,
    /// The version the client based the command on (`If-Match`), if it named one.
    pub expected: Option<usize>,
    /// The command.
    pub command: C,
}

/// Runs a command the one way every endpoint does: the scope checked, the origin taken from the
/// request, the command run through `repository` (the process's one repository of its type), a
/// refusal or conflict mapped to its status once (`command_failed`); `view` reads the result.
pub async fn command<A, V>(
    repository: &Repository<A>,
    principal: &Principal,
    headers: &HeaderMap,
    ask: Ask<A::Command>,
    view: impl FnOnce(&A, usize) -> V,
) -> Result<Committed<A, V>, ApiError>
where
    A: cqrs_es::Aggregate<Services = CommandContext>
        + TenantOwned
        + Footprint
        + Snapshot
        + colloquy_domain::personal::PersonalData,
    A::Command: Clone,
    ApiError: From<A::Error>,
{
    require(principal, ask.scope)?;
    let origin = origin(principal, headers)?;
    repository
        .execute(&ask.id.to_string(), ask.command, ask.intent, ask.expected, &origin, view)
        .await
        .map_err(|e| command_failed(e, format!("{} {}", ask.kind, ask.id)))
}

/// The header with which a token acts on behalf of an agent (a user id of the integrator's): the
/// agent is then the events' actor, and the token is recorded beside it as `via_token`.
pub const ON_BEHALF_OF: &str = "colloquy-on-behalf-of";

/// The origin of a command: the caller's tenant and token (or the agent it acts for), the
/// request id, and a correlation id taken from `X-Correlation-Id` when the client sends one.
pub fn origin(principal: &Principal, headers: &HeaderMap) -> Result<Origin, ApiError> {
    let token = principal.token_id.to_string();
    let (actor, via_token) = match headers.get(ON_BEHALF_OF) {
        None => (Actor { kind: ActorKind::Token, id: token }, None),
        Some(value) => {
            let agent = value
                .to_str()
                .ok()
                .and_then(|v| colloquy_domain::validate::external_id(ON_BEHALF_OF, v.trim()).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Colloquy-On-Behalf-Of must be an agent id of 1 to 128 characters without spaces",
                    )
                })?;
            (Actor { kind: ActorKind::User, id: agent }, Some(token))
        }
    };
    let correlation_id = match headers.get("x-correlation-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                // Only the hyphenated form the document states (`parse_str` takes others too).
                .filter(|v| v.trim().len() == 36)
                .and_then(|v| Uuid::parse_str(v.trim()).ok())
                .ok_or_else(|| ApiError::bad_request("X-Correlation-Id must be a UUID"))?,
        ),
    };
    Ok(Origin {
        tenant: principal.tenant.clone(),
        actor,
        via_token,
        request_id: request_id(headers)?,
        correlation_id,
        causation_id: None,
    })
}

/// Longest `X-Request-Id` recorded in events.
pub const MAX_REQUEST_ID: usize = 128;

/// The request id recorded in a command's events: the client's `X-Request-Id` (or the one the
/// server made up), 1 to [`MAX_REQUEST_ID`] visible ASCII characters; anything else is a 400, so
/// a client cannot store an arbitrary blob in every event's metadata.
fn request_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("x-request-id") else { return Ok(None) };
    let valid = value
        .to_str()
        .ok()
        .filter(|v| (1..=MAX_REQUEST_ID).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()));
    valid.map(|v| Some(v.to_owned())).ok_or_else(|| {
        ApiError::bad_request(format!(
            "X-Request-Id must be 1 to {MAX_REQUEST_ID} visible ASCII characters without spaces"
        ))
    })
}

/// The header that carries a command's global position, for read-your-writes.
pub const POSITION_HEADER: &str = "colloquy-position";

impl<T> Versioned<T> {
    /// The same answer with `Colloquy-Position`.
    pub fn at(mut self, position: Option<i64>) -> Self {
        self.position = position;
        self
    }
}

/// A JSON body answered with a status and the resource's version as its `ETag`.
#[derive(Debug)]
pub struct Versioned<T> {
    /// The status.
    pub status: StatusCode,
    /// The resource's version.
    pub version: usize,
    /// Where a created resource lives.
    pub location: Option<String>,
    /// Global position of the command's last event (`Colloquy-Position`).
    pub position: Option<i64>,
    /// The body.
    pub body: T,
}

impl<T> Versioned<T> {
    /// 200 with a command's view, its version and its position.
    pub fn changed<A>(committed: Committed<A, T>) -> Self
    where
        A: cqrs_es::Aggregate,
    {
        Self::ok(committed.version, committed.view).at(committed.position)
    }

    /// 200 with the body.
    pub fn ok(version: usize, body: T) -> Self {
        Self { status: StatusCode::OK, version, location: None, position: None, body }
    }

    /// 201 with the body and its location.
    pub fn created(version: usize, location: String, body: T) -> Self {
        Self { status: StatusCode::CREATED, version, location: Some(location), position: None, body }
    }
}

impl<T: Serialize> IntoResponse for Versioned<T> {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&etag(self.version)) {
            headers.insert(header::ETAG, value);
        }
        if let Some(position) = self.position {
            headers.insert(POSITION_HEADER, HeaderValue::from(position));
        }
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        response
    }
}
