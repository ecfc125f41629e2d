//! `/v1/tokens`: the admin API for the caller's tenant's API tokens (scope `admin`). Secrets are
//! shown once, in the answer that creates them; only their hashes are stored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use colloquy_infra::tokens::{self, TokenError, TokenInfo, ADMIN_SCOPE};

use crate::extract::{require, Auth, Json, Path};
use crate::idempotency::HoldsSecret;
use crate::instant::Instant;
use crate::problem::ApiError;
use crate::state::AppState;

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "reporting", "scopes": ["events:read", "reports:read"], "expires_at": "2027-01-01T00:00:00Z"}))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// 1 to 100 characters, no control characters.
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,100}$")]
    name: String,
    #[serde(deserialize_with = "crate::bounded::at_most::<_, _, { crate::bounded::MAX_SCOPES }>")]
    #[schema(max_items = 32)]
    scopes: Vec<String>,
    expires_at: Option<Instant>,
}

/// A new token with its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    id: Uuid,
    /// Send as `Authorization: Bearer <secret>`; shown only now.
    secret: String,
    name: String,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
}

/// The tenant's tokens.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    #[schema(value_type = Vec<crate::openapi::TokenInfoSchema>)]
    data: Vec<TokenInfo>,
}

/// `POST /v1/tokens`
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    summary = "Create a token",
    description = "The answer holds the secret; it is shown only now (only its hash is stored). A retry with the same `Idempotency-Key` answers 409 with `Location` naming the token created: the secret is not kept, so it is not replayed.",
    request_body = CreateToken,
    responses(
        (status = 201, description = "Created; `Location` names it.", body = CreatedToken,
            headers(("Location" = String, description = "`/v1/tokens/{id}`"))),
        (status = 409, response = crate::openapi::Conflict)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: axum::http::HeaderMap,
    Json(body): Json<CreateToken>,
) -> Result<Response, ApiError> {
    require(&principal, ADMIN_SCOPE)?;
    crate::routes::origin(&principal, &headers)?;
    let issued = tokens::create_token(
        state.store(),
        &principal.tenant,
        &body.name,
        &body.scopes,
        body.expires_at.map(Into::into),
        Utc::now(),
    )
    .await
    .map_err(|error| match error {
        TokenError::UnknownScope(_) | TokenError::NoScope => {
            ApiError::invalid_field("scopes", error.to_string())
        }
        TokenError::BadName => ApiError::invalid_field("name", error.to_string()),
        // A time in the past is well formed: the request is refused as it stands (422).
        TokenError::ExpiryInPast => ApiError::unacceptable_field("expires_at", error.to_string()),
        TokenError::ExpiryOutOfRange => ApiError::invalid_field("expires_at", error.to_string()),
        TokenError::Store(error) => ApiError::from(error),
    })?;
    let created = CreatedToken {
        id: issued.token_id,
        secret: issued.secret,
        name: body.name,
        scopes: body.scopes,
        expires_at: body.expires_at.map(Into::into),
    };
    let location = format!("/v1/tokens/{}", created.id);
    let response =
        (StatusCode::CREATED, [(axum::http::header::LOCATION, location.clone())], axum::Json(created))
            .into_response();
    // The secret must never reach the store of idempotent responses.
    Ok(HoldsSecret::mark(response, location, "revoke it and create another"))
}

/// `GET /v1/tokens`
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    summary = "List the tenant's tokens",
    responses((status = 200, description = "Every token of the tenant, without secrets.", body = TokenList))
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<axum::Json<TokenList>, ApiError> {
    require(&principal, ADMIN_SCOPE)?;
    let data = tokens::list_tokens(state.store(), &principal.tenant).await?;
    Ok(axum::Json(TokenList { data }))
}

/// `DELETE /v1/tokens/{id}`: revokes at once; 404 for a token of another tenant.
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "tokens",
    summary = "Revoke a token",
    description = "Effective at once.",
    params(("id" = Uuid, Path, description = "The token's id.")),
    responses(
        (status = 204, description = "Revoked.")
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: axum::http::HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    require(&principal, ADMIN_SCOPE)?;
    // The shared command headers are held to their rules here too, though no event records them.
    crate::routes::origin(&principal, &headers)?;
    if !tokens::revoke_token(state.store(), &principal.tenant, id, Utc::now()).await? {
        return Err(ApiError::not_found(format!("token {id}")));
    }
    state.forget_verified_tokens();
    Ok(StatusCode::NO_CONTENT)
}
