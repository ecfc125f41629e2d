//! Tenants and API tokens. A token is shown once when created and stored only as its SHA-256
//! hash; it belongs to one tenant, carries scopes, and can expire or be revoked.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;

use colloquy_domain::TenantId;

use crate::error::StoreError;
use crate::store::Store;
use crate::tx::{Durability, File, Tx};

/// The scope that grants everything.
pub const ADMIN_SCOPE: &str = "admin";

/// A verified token: whose it is and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id (not its secret).
    pub token_id: Uuid,
    /// The token's tenant.
    pub tenant: TenantId,
    /// The token's name, recorded as the actor in events.
    pub name: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// When the token stops being accepted, if ever: a cache of verified tokens must honour it.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// Whether the token grants `scope` (the admin scope grants all).
    pub fn allows(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == ADMIN_SCOPE)
    }
}

/// A newly created token, with its secret shown this one time.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The token's id.
    pub token_id: Uuid,
    /// The secret to send as `Authorization: Bearer <secret>`.
    pub secret: String,
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret: `cq_` and 64 hex characters (256 bits).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("cq_{}", hex::encode(bytes))
}

/// Creates the tenant if it does not exist.
pub async fn ensure_tenant(store: &Store, tenant: &TenantId, name: &str) -> Result<(), StoreError> {
    let sql = "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";
    let mut tx = store.begin(File::Events, Durability::Durable).await?;
    crate::on_tx!(&mut *tx, |conn| {
        sqlx::query(sql).bind(tenant.as_str()).bind(name).execute(conn).await?;
    });
    tx.commit().await?;
    Ok(())
}

/// Stores a token with the given secret. Used for generated secrets and for a bootstrap secret
/// the operator chose; a secret that is already stored is left as it is.
pub async fn insert_token(
    store: &Store,
    tenant: &TenantId,
    name: &str,
    secret: &str,
    scopes: &[String],
    expires_at: Option<DateTime<Utc>>,
) -> Result<IssuedToken, StoreError> {
    let token_id = Uuid::now_v7();
    let scopes_json = serde_json::to_value(scopes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let sql = "INSERT INTO api_tokens (id, tenant_id, name, token_hash, scopes, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token_hash) DO NOTHING";
    let mut tx = store.begin(File::Events, Durability::Durable).await?;
    // The columns' types differ: uuid, jsonb and timestamptz on PostgreSQL, text on SQLite.
    match &mut *tx {
        Tx::Postgres(tx) => {
            sqlx::query(sql)
                .bind(token_id)
                .bind(tenant.as_str())
                .bind(name)
                .bind(hash(secret))
                .bind(scopes_json)
                .bind(expires_at)
                .execute(&mut **tx)
                .await?;
        }
        Tx::Sqlite(tx) => {
            sqlx::query(sql)
                .bind(token_id.to_string())
                .bind(tenant.as_str())
                .bind(name)
                .bind(hash(secret))
                .bind(scopes_json.to_string())
                .bind(expires_at.map(|t| t.to_rfc3339()))
                .execute(&mut **tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(IssuedToken { token_id, secret: secret.to_owned() })
}

/// Whether the tenant has any token yet.
pub async fn has_tokens(store: &Store, tenant: &TenantId) -> Result<bool, StoreError> {
    let sql = "SELECT count(*) FROM api_tokens WHERE tenant_id = $1";
    let count: i64 =
        crate::on_pool!(store, |pool| sqlx::query_scalar(sql).bind(tenant.as_str()).fetch_one(pool).await?);
    Ok(count > 0)
}

/// Looks a secret up. `None` for an unknown, expired or revoked token.
pub async fn authenticate(
    store: &Store,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<Option<Principal>, StoreError> {
    let token_hash = hash(secret);
    let row = if let Some(pool) = store.postgres_pool() {
        sqlx::query(
            "SELECT id::text AS id, tenant_id, name, scopes::text AS scopes,
                    to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS expires_at,
                    revoked_at IS NOT NULL AS revoked
               FROM api_tokens WHERE token_hash = $1",
        )
        .bind(&token_hash)
        .fetch_optional(pool)
        .await?
        .map(|row| token_row(&row))
    } else if let Some((pool, _)) = store.sqlite_pool() {
        sqlx::query(
            "SELECT id, tenant_id, name, scopes, expires_at, revoked_at IS NOT NULL AS revoked
               FROM api_tokens WHERE token_hash = ?",
        )
        .bind(&token_hash)
        .fetch_optional(pool)
        .await?
        .map(|row| token_row(&row))
    } else {
        None
    };
    let Some(row) = row.transpose()? else {
        return Ok(None);
    };
    if row.revoked || row.principal.expires_at.is_some_and(|at| at <= now) {
        return Ok(None);
    }
    Ok(Some(row.principal))
}

struct TokenRow {
    principal: Principal,
    revoked: bool,
}

fn token_row<R>(row: &R) -> Result<TokenRow, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let corrupt = |what: &str| StoreError::Corrupt(format!("api_tokens.{what}"));
    let id: String = row.try_get("id")?;
    let tenant: String = row.try_get("tenant_id")?;
    let scopes: String = row.try_get("scopes")?;
    let expires_at: Option<String> = row.try_get("expires_at")?;
    Ok(TokenRow {
        principal: Principal {
            token_id: Uuid::parse_str(&id).map_err(|_| corrupt("id"))?,
            tenant: TenantId::parse(&tenant).map_err(|_| corrupt("tenant_id"))?,
            name: row.try_get("name")?,
            scopes: serde_json::from_str(&scopes).map_err(|_| corrupt("scopes"))?,
            expires_at: expires_at
                .map(|at| DateTime::parse_from_rfc3339(&at).map(|t| t.with_timezone(&Utc)))
                .transpose()
                .map_err(|_| corrupt("expires_at"))?,
        },
        revoked: row.try_get("revoked")?,
    })
}

/// Makes sure `tenant` exists and can be reached: stores `bootstrap_secret` as an admin token
/// when given, or, when the tenant has no token at all, creates one. Returns a secret only when
/// it generated one, so the caller can show it once.
pub async fn bootstrap(
    store: &Store,
    tenant: &TenantId,
    bootstrap_secret: Option<&str>,
) -> Result<Option<String>, StoreError> {
    ensure_tenant(store, tenant, tenant.as_str()).await?;
    let scopes = vec![ADMIN_SCOPE.to_owned()];
    if let Some(secret) = bootstrap_secret {
        insert_token(store, tenant, "bootstrap", secret, &scopes, None).await?;
        return Ok(None);
    }
    if has_tokens(store, tenant).await? {
        return Ok(None);
    }
    let secret = generate_secret();
    insert_token(store, tenant, "admin", &secret, &scopes, None).await?;
    Ok(Some(secret))
}

/// Every scope a token can carry. `admin` grants all of them and token management.
pub const SCOPES: &[&str] = &[
    "conversations:read",
    "conversations:write",
    "contacts:read",
    "contacts:write",
    "contacts:erase",
    "groups:read",
    "groups:write",
    "settings:read",
    "settings:write",
    "events:read",
    "reports:read",
    "audit:read",
    "webhooks:read",
    "webhooks:write",
    ADMIN_SCOPE,
];

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A scope that does not exist.
    #[error("unknown scope {0:?}; scopes are: {list}", list = SCOPES.join(", "))]
    UnknownScope(String),
    /// No scope at all.
    #[error("a token needs at least one scope")]
    NoScope,
    /// A name that is empty or too long.
    #[error("name must be 1 to 100 characters without control characters")]
    BadName,
    /// An expiry that has passed.
    #[error("expires_at must be in the future")]
    ExpiryInPast,
    /// An expiry past the last instant a client may give (a listing could not write it back).
    #[error("expires_at {}", colloquy_domain::validate::INSTANT_RANGE)]
    ExpiryOutOfRange,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token as listed: never its secret, which is stored only as a hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: String,
    /// Name (the actor recorded in events).
    pub name: String,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Expires at, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoked at, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Creates a token with a new random secret for `tenant` (created if missing). The secret is in
/// the answer and nowhere else.
pub async fn create_token(
    store: &Store,
    tenant: &TenantId,
    name: &str,
    scopes: &[String],
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<IssuedToken, TokenError> {
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(TokenError::BadName);
    }
    if scopes.is_empty() {
        return Err(TokenError::NoScope);
    }
    if let Some(unknown) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(TokenError::UnknownScope(unknown.clone()));
    }
    if let Some(at) = expires_at {
        colloquy_domain::validate::instant("expires_at", at).map_err(|_| TokenError::ExpiryOutOfRange)?;
    }
    if expires_at.is_some_and(|at| at <= now) {
        return Err(TokenError::ExpiryInPast);
    }
    let mut unique: Vec<String> = Vec::new();
    for scope in scopes {
        if !unique.contains(scope) {
            unique.push(scope.clone());
        }
    }
    ensure_tenant(store, tenant, tenant.as_str()).await?;
    Ok(insert_token(store, tenant, name, &generate_secret(), &unique, expires_at).await?)
}

fn parse_time(what: &str, value: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    value
        .map(|v| DateTime::parse_from_rfc3339(&v).map(|t| t.with_timezone(&Utc)))
        .transpose()
        .map_err(|_| StoreError::Corrupt(format!("api_tokens.{what}")))
}

/// The tenant's tokens, oldest first.
pub async fn list_tokens(store: &Store, tenant: &TenantId) -> Result<Vec<TokenInfo>, StoreError> {
    let format = |column: &str| {
        format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS {column}")
    };
    let sql = if store.postgres_pool().is_some() {
        format!(
            "SELECT id::text AS id, tenant_id, name, scopes::text AS scopes, {}, {}, {}
               FROM api_tokens WHERE tenant_id = $1 ORDER BY created_at, id",
            format("created_at"),
            format("expires_at"),
            format("revoked_at")
        )
    } else {
        "SELECT id, tenant_id, name, scopes, created_at, expires_at, revoked_at
           FROM api_tokens WHERE tenant_id = $1 ORDER BY created_at, id"
            .to_owned()
    };
    type Raw = (String, String, String, String, String, Option<String>, Option<String>);
    let rows: Vec<Raw> =
        crate::on_pool!(store, |pool| sqlx::query_as(&sql).bind(tenant.as_str()).fetch_all(pool).await?);
    rows.into_iter()
        .map(|(id, tenant_id, name, scopes, created_at, expires_at, revoked_at)| {
            Ok(TokenInfo {
                id: Uuid::parse_str(&id).map_err(|_| StoreError::Corrupt("api_tokens.id".into()))?,
                tenant_id,
                name,
                scopes: serde_json::from_str(&scopes)
                    .map_err(|_| StoreError::Corrupt("api_tokens.scopes".into()))?,
                created_at: parse_time("created_at", Some(created_at))?.unwrap_or_default(),
                expires_at: parse_time("expires_at", expires_at)?,
                revoked_at: parse_time("revoked_at", revoked_at)?,
            })
        })
        .collect()
}

/// Revokes one of the tenant's tokens; false when the tenant has no token with this id. A
/// revoked token stops working within the API's verified-token cache lifetime (5 s).
pub async fn revoke_token(
    store: &Store,
    tenant: &TenantId,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let sql = "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, $3) WHERE id = $1 AND tenant_id = $2";
    let mut tx = store.begin(File::Events, Durability::Durable).await?;
    // The columns' types differ: uuid and timestamptz on PostgreSQL, text on SQLite.
    let result = match &mut *tx {
        Tx::Postgres(tx) => sqlx::query(sql)
            .bind(id)
            .bind(tenant.as_str())
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
        Tx::Sqlite(tx) => sqlx::query(sql)
            .bind(id.to_string())
            .bind(tenant.as_str())
            .bind(now.to_rfc3339())
            .execute(&mut **tx)
            .await?
            .rows_affected(),
    };
    tx.commit().await?;
    Ok(result > 0)
}
