//! What the versioned definitions' endpoints share (`/v1/calendars`, `/v1/sla-policies`): create,
//! read, replace (a new version, `If-Match` against the current), delete, list and read every
//! version. Each resource's file keeps only its documented handlers, which call these.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use colloquy_domain::definition::{Defined, Definition, DefinitionCommand};
use colloquy_infra::tokens::Principal;
use colloquy_infra::{Intent, Repository};
use colloquy_projections::sla::definitions;

use crate::extract::{etag, require};
use crate::problem::ApiError;
use crate::routes::{command, Ask, Versioned, POSITION_HEADER};
use crate::state::AppState;
use crate::views::Page;

/// A definition as its endpoints answer it: its current version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DefinitionView<D> {
    /// Its id.
    pub id: Uuid,
    /// Its current version: 1 at creation, one more per edit.
    pub version: u32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its current version was recorded.
    pub updated_at: DateTime<Utc>,
    /// What the current version says.
    pub definition: D,
}

/// One recorded version of a definition.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevisionView<D> {
    /// Its number.
    pub version: u32,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// What it says.
    pub definition: D,
}

fn view<D: Scoped>(defined: &Defined<D>) -> Option<DefinitionView<D>> {
    let first = defined.revisions.first()?;
    let current = defined.current()?;
    Some(DefinitionView {
        id: defined.id?,
        version: current.version,
        created_at: first.recorded_at,
        updated_at: current.recorded_at,
        definition: current.definition.clone(),
    })
}

/// The scopes a kind of definition is read and changed with.
pub trait Scoped: Definition {
    /// To read it.
    const READ: &'static str;
    /// To change it.
    const WRITE: &'static str;
}

/// Calendars and SLA policies are the tenant's settings.
impl Scoped for colloquy_domain::calendar::Calendar {
    const READ: &'static str = "settings:read";
    const WRITE: &'static str = "settings:write";
}

impl Scoped for colloquy_domain::sla::SlaPolicy {
    const READ: &'static str = "settings:read";
    const WRITE: &'static str = "settings:write";
}

impl Scoped for colloquy_domain::webhook::Webhook {
    const READ: &'static str = "webhooks:read";
    const WRITE: &'static str = "webhooks:write";
}

fn scope<D: Scoped>(write: bool) -> &'static str {
    if write {
        D::WRITE
    } else {
        D::READ
    }
}

/// `POST`: creates it, under the client's id or a new one, at `/v1/<path>/<id>`.
pub async fn create<D: Scoped>(
    repository: &Repository<Defined<D>>,
    principal: &Principal,
    headers: &HeaderMap,
    path: &str,
    id: Option<Uuid>,
    definition: D,
) -> Result<Versioned<DefinitionView<D>>, ApiError> {
    let id = id.unwrap_or_else(Uuid::now_v7);
    let command_ = DefinitionCommand::Create { id, tenant_id: principal.tenant.clone(), definition };
    let ask = Ask {
        scope: scope::<D>(true),
        kind: D::NOUN,
        id,
        intent: Intent::Create,
        expected: None,
        command: command_,
    };
    let committed = command(repository, principal, headers, ask, |defined, _| view(defined)).await?;
    let body = committed.view.ok_or_else(|| ApiError::not_found(format!("{} {id}", D::NOUN)))?;
    Ok(Versioned::created(committed.version, format!("/v1/{path}/{id}"), body).at(committed.position))
}

/// `GET /{id}`: the current version; deleted ones are gone.
pub async fn get<D: Scoped>(
    repository: &Repository<Defined<D>>,
    principal: &Principal,
    id: Uuid,
) -> Result<Versioned<DefinitionView<D>>, ApiError> {
    require(principal, scope::<D>(false))?;
    read(repository, principal, id).await
}

/// [`get`] for a handler that checked a scope of its own (a change that reads the current
/// version first).
pub async fn read<D: Scoped>(
    repository: &Repository<Defined<D>>,
    principal: &Principal,
    id: Uuid,
) -> Result<Versioned<DefinitionView<D>>, ApiError> {
    let found = repository
        .read(&principal.tenant, &id.to_string(), |defined, version| {
            (!defined.deleted).then(|| view(defined).map(|view| (version, view))).flatten()
        })
        .await?;
    let (version, view) = found.flatten().ok_or_else(|| ApiError::not_found(format!("{} {id}", D::NOUN)))?;
    Ok(Versioned::ok(version, view))
}

/// `PUT /{id}`: records `definition` as the next version (nothing when it is the same).
pub async fn replace<D: Scoped>(
    repository: &Repository<Defined<D>>,
    principal: &Principal,
    headers: &HeaderMap,
    (id, expected): (Uuid, Option<usize>),
    definition: D,
) -> Result<Versioned<DefinitionView<D>>, ApiError> {
    let ask = Ask {
        scope: scope::<D>(true),
        kind: D::NOUN,
        id,
        intent: Intent::Update,
        expected,
        command: DefinitionCommand::Revise { definition },
    };
    let committed = command(repository, principal, headers, ask, |defined, _| view(defined)).await?;
    let version = committed.version;
    let body = committed.view.ok_or_else(|| ApiError::not_found(format!("{} {id}", D::NOUN)))?;
    Ok(Versioned::ok(version, body).at(committed.position))
}

/// `DELETE /{id}`: 204. Its versions stay on its stream; timers that ran under it keep saying so.
pub async fn delete<D: Scoped>(
    repository: &Repository<Defined<D>>,
    principal: &Principal,
    headers: &HeaderMap,
    (id, expected): (Uuid, Option<usize>),
) -> Result<Response, ApiError> {
    let ask = Ask {
        scope: scope::<D>(true),
        kind: D::NOUN,
        id,
        intent: Intent::Update,
        expected,
        command: DefinitionCommand::Delete,
    };
    let committed = command(repository, principal, headers, ask, |_, _| ()).await?;
    let mut response =
        (StatusCode::NO_CONTENT, [(axum::http::header::ETAG, etag(committed.version))]).into_response();
    if let Some(position) = committed.position {
        response.headers_mut().insert(POSITION_HEADER, position.into());
    }
    Ok(response)
}

/// `GET /{id}/versions`: every version, oldest first (a deleted one's too).
pub async fn versions<D: Scoped>(
    repository: &Repository<Defined<D>>,
    principal: &Principal,
    id: Uuid,
) -> Result<axum::Json<Page<RevisionView<D>>>, ApiError> {
    require(principal, scope::<D>(false))?;
    let found = repository
        .read(&principal.tenant, &id.to_string(), |defined, _| {
            defined
                .revisions
                .iter()
                .map(|revision| RevisionView {
                    version: revision.version,
                    recorded_at: revision.recorded_at,
                    definition: revision.definition.clone(),
                })
                .collect::<Vec<_>>()
        })
        .await?;
    let data = found.ok_or_else(|| ApiError::not_found(format!("{} {id}", D::NOUN)))?;
    Ok(axum::Json(Page { data, next_cursor: None }))
}

/// `GET`: the tenant's live definitions of the kind, oldest first, from the read model.
pub async fn list<D: Scoped>(
    state: &AppState,
    principal: &Principal,
) -> Result<axum::Json<Page<DefinitionView<D>>>, ApiError> {
    require(principal, scope::<D>(false))?;
    let listed = definitions::list::<D>(state.store(), &principal.tenant).await?;
    let data = listed
        .into_iter()
        .filter_map(|listed| {
            Some(DefinitionView {
                id: Uuid::parse_str(&listed.id).ok()?,
                version: listed.version,
                created_at: listed.created_at,
                updated_at: listed.recorded_at,
                definition: serde_json::from_value(listed.definition).ok()?,
            })
        })
        .collect();
    Ok(axum::Json(Page { data, next_cursor: None }))
}
