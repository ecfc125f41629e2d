//! The direct cqrs-es peer that `load --peer` measures Colloquy against: the same command
//! endpoints written the most direct way with the same libraries. cqrs-es `CqrsFramework` over
//! postgres-es `PostgresEventRepository` in event-store mode (every command loads the whole
//! stream; no snapshots, no cache), a `GenericQuery` inbox view updated after each commit, axum
//! routes. No global log, no relay, no retries: a conflict under contention is a 409.
//!
//! Configured with the same variables as `colloquy serve` (`COLLOQUY_LISTEN`,
//! `COLLOQUY_DATABASE_URL`, `COLLOQUY_BOOTSTRAP_TOKEN`, `COLLOQUY_DB_MAX_CONNECTIONS`), so the
//! harness starts both the same way; it creates its tables on start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use cqrs_es::persist::{GenericQuery, PersistedEventStore};
use cqrs_es::{AggregateError, CqrsFramework};
use postgres_es::{PostgresEventRepository, PostgresViewRepository};
use serde::Deserialize;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Pool, Postgres};

#[path = "peer/conversation.rs"]
mod conversation;

use conversation::{
    Contact, ContactCommand, Conversation, ConversationCommand, ConversationError, InboxView, Sender, Status,
};

/// The schema from postgres-es's `db/init.sql` (less the snapshots table, which event-store mode
/// never reads), and one table for the view.
const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS events (
        aggregate_type text NOT NULL, aggregate_id text NOT NULL,
        sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL,
        event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    "CREATE TABLE IF NOT EXISTS inbox_view (
        view_id text NOT NULL, version bigint CHECK (version >= 0) NOT NULL, payload json NOT NULL,
        PRIMARY KEY (view_id))",
];

/// The direct cqrs-es + postgres-es + axum peer (a bench target, not part of Colloquy).
#[derive(Debug, Parser)]
struct Args {
    /// Accepted and ignored, so the harness can start the peer as it starts `colloquy serve`.
    #[arg(default_value = "serve")]
    command: String,
    #[arg(long, env = "COLLOQUY_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
    #[arg(long, env = "COLLOQUY_DATABASE_URL")]
    database_url: String,
    /// The one bearer token the peer accepts.
    #[arg(long, env = "COLLOQUY_BOOTSTRAP_TOKEN")]
    token: String,
    #[arg(long, env = "COLLOQUY_DB_MAX_CONNECTIONS", default_value_t = 32)]
    max_connections: u32,
}

type Inbox = GenericQuery<PostgresViewRepository<InboxView, Conversation>, InboxView, Conversation>;

struct Peer {
    conversations: CqrsFramework<Conversation, PersistedEventStore<PostgresEventRepository, Conversation>>,
    contacts: CqrsFramework<Contact, PersistedEventStore<PostgresEventRepository, Contact>>,
    inbox: Arc<Inbox>,
    token: String,
}

/// Failed view updates, counted instead of ignored (GenericQuery drops them without a handler).
static VIEW_ERRORS: AtomicU64 = AtomicU64::new(0);

fn inbox_query(pool: &Pool<Postgres>) -> Inbox {
    let mut query = GenericQuery::new(Arc::new(PostgresViewRepository::new("inbox_view", pool.clone())));
    query.use_error_handler(Box::new(|error| {
        if VIEW_ERRORS.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("peer: view update failed: {error}");
        }
    }));
    query
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = PgPoolOptions::new().max_connections(args.max_connections).connect(&args.database_url).await?;
    for statement in SCHEMA {
        sqlx::query(statement).execute(&pool).await?;
    }
    // A second GenericQuery over the same table answers reads; the framework owns the first.
    let dispatched = inbox_query(&pool);
    let conversations = CqrsFramework::new(
        PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone())),
        vec![Box::new(dispatched)],
        (),
    );
    let contacts = CqrsFramework::new(
        PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone())),
        vec![],
        (),
    );
    let peer =
        Arc::new(Peer { conversations, contacts, inbox: Arc::new(inbox_query(&pool)), token: args.token });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/stats", get(|| async { Json(json!({"view_errors": VIEW_ERRORS.load(Ordering::Relaxed)})) }))
        .route("/v1/contacts", post(create_contact))
        .route("/v1/conversations", post(open_conversation))
        .route("/v1/conversations/{id}", get(conversation_view))
        .route("/v1/conversations/{id}/messages", post(add_message))
        .route("/v1/conversations/{id}/assignment", post(assign))
        .route("/v1/conversations/{id}/status", post(change_status))
        .route("/v1/conversations/{id}/labels", post(add_labels))
        .with_state(peer);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// A request that carried the peer's bearer token.
struct Authorized;

impl FromRequestParts<Arc<Peer>> for Authorized {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, peer: &Arc<Peer>) -> Result<Self, StatusCode> {
        let header = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        match header.strip_prefix("Bearer ") {
            Some(token) if token == peer.token => Ok(Authorized),
            _ => Err(StatusCode::UNAUTHORIZED),
        }
    }
}

struct Refusal(AggregateError<ConversationError>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            AggregateError::UserError(ConversationError::NotFound) => StatusCode::NOT_FOUND,
            AggregateError::UserError(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AggregateError::AggregateConflict => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({"detail": self.0.to_string()}))).into_response()
    }
}

impl From<AggregateError<ConversationError>> for Refusal {
    fn from(error: AggregateError<ConversationError>) -> Self {
        Self(error)
    }
}

type Answer = Result<(StatusCode, Json<serde_json::Value>), Refusal>;

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[derive(Deserialize)]
struct NewContact {
    first_name: String,
    #[serde(default)]
    phone: String,
}

async fn create_contact(
    _: Authorized,
    State(peer): State<Arc<Peer>>,
    Json(body): Json<NewContact>,
) -> Answer {
    let id = new_id();
    peer.contacts
        .execute(&id, ContactCommand::Create { first_name: body.first_name, phone: body.phone })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

#[derive(Deserialize)]
struct NewConversation {
    contact_id: String,
    channel: String,
    inbox_id: Option<String>,
}

async fn open_conversation(
    _: Authorized,
    State(peer): State<Arc<Peer>>,
    Json(body): Json<NewConversation>,
) -> Answer {
    let id = new_id();
    let command = ConversationCommand::Open {
        contact_id: body.contact_id,
        channel: body.channel,
        inbox_id: body.inbox_id,
    };
    peer.conversations.execute(&id, command).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

async fn conversation_view(_: Authorized, State(peer): State<Arc<Peer>>, Path(id): Path<String>) -> Response {
    match peer.inbox.load(&id).await {
        Some(view) => Json(view).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
struct NewMessage {
    sender: Sender,
    text: String,
}

async fn add_message(
    _: Authorized,
    State(peer): State<Arc<Peer>>,
    Path(id): Path<String>,
    Json(body): Json<NewMessage>,
) -> Answer {
    let message_id = new_id();
    let command = ConversationCommand::AddMessage {
        message_id: message_id.clone(),
        sender: body.sender,
        text: body.text,
    };
    peer.conversations.execute(&id, command).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": message_id}))))
}

#[derive(Deserialize)]
struct Assignment {
    assignee_id: String,
}

async fn assign(
    _: Authorized,
    State(peer): State<Arc<Peer>>,
    Path(id): Path<String>,
    Json(body): Json<Assignment>,
) -> Answer {
    peer.conversations.execute(&id, ConversationCommand::Assign { assignee_id: body.assignee_id }).await?;
    Ok((StatusCode::OK, Json(json!({"id": id}))))
}

#[derive(Deserialize)]
struct StatusChange {
    status: Status,
}

async fn change_status(
    _: Authorized,
    State(peer): State<Arc<Peer>>,
    Path(id): Path<String>,
    Json(body): Json<StatusChange>,
) -> Answer {
    peer.conversations.execute(&id, ConversationCommand::ChangeStatus { status: body.status }).await?;
    Ok((StatusCode::OK, Json(json!({"id": id}))))
}

#[derive(Deserialize)]
struct Labels {
    add: Vec<String>,
}

async fn add_labels(
    _: Authorized,
    State(peer): State<Arc<Peer>>,
    Path(id): Path<String>,
    Json(body): Json<Labels>,
) -> Answer {
    peer.conversations.execute(&id, ConversationCommand::AddLabels { labels: body.add }).await?;
    Ok((StatusCode::OK, Json(json!({"id": id}))))
}
