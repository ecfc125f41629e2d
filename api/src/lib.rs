//! Colloquy's HTTP API: axum routes over the command runner and the aggregates' state, with one
//! mapping from errors to problem+json. The only crate that knows HTTP.

pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod paging;
pub mod problem;
pub mod process;
pub mod routes;
pub mod serde_util;
pub mod state;
pub mod views;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use colloquy_infra::Config;

use crate::problem::ApiError;
pub use crate::process::{Roles, Running, ShutdownHandle};
use crate::routes::{contacts, conversations, events, groups, health, inbox, messages, stream, tokens};
pub use crate::state::AppState;

/// Largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The tenant the embedded default creates on first start.
pub const DEFAULT_TENANT: &str = "default";

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The router, as both `main` and the tests build it.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/events", get(events::list))
        .route("/events/stream", get(stream::stream))
        .route("/tokens", post(tokens::create).get(tokens::list))
        .route("/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/contacts", post(contacts::create))
        .route("/contacts/{id}", get(contacts::get).patch(contacts::patch))
        .route("/contacts/{id}/events", get(contacts::events))
        .route("/conversations", post(conversations::open).get(inbox::list))
        .route("/conversations/counts", get(inbox::counts))
        .route("/conversations/resolve", post(inbox::resolve))
        .route(
            "/conversations/{id}",
            get(conversations::get).patch(conversations::patch).delete(conversations::delete),
        )
        .route("/conversations/{id}/status", post(conversations::change_status))
        .route("/conversations/{id}/assignment", post(conversations::assign).delete(conversations::unassign))
        .route("/conversations/{id}/labels", post(conversations::change_labels))
        .route("/conversations/{id}/read", post(conversations::mark_read))
        .route("/conversations/{id}/events", get(conversations::events))
        .route("/conversations/{id}/messages", post(messages::add).get(messages::list))
        .route("/conversations/{id}/messages/{message_id}", get(messages::get).patch(messages::patch))
        .route("/conversations/{id}/messages/{message_id}/delivery", post(messages::report_delivery))
        .route("/groups", post(groups::create))
        .route("/groups/{id}", get(groups::get).patch(groups::patch))
        .route("/groups/{id}/members", get(groups::members).post(groups::add_members))
        .route(
            "/groups/{id}/members/{contact_id}",
            axum::routing::patch(groups::change_role).delete(groups::remove_member),
        )
        .route("/groups/{id}/invite", get(groups::invite))
        .route("/groups/{id}/invite/revoke", post(groups::revoke_invite))
        .route("/groups/{id}/join-requests", get(groups::join_requests).post(groups::handle_join_requests))
        .route("/groups/{id}/settings", axum::routing::patch(groups::change_settings))
        .route("/groups/{id}/leave", post(groups::leave))
        .route("/groups/{id}/sync", post(groups::sync))
        .route("/groups/{id}/events", get(groups::events));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .nest("/v1", v1)
        .fallback(|| async { ApiError::not_found("this route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::layer))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), metrics::layer))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| -> Response {
            ApiError::internal(&"a request handler panicked").into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %request.method(), uri = %request.uri(), request_id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Starts everything `colloquy serve` runs: the API, the relay and the projectors.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    process::start(config, Roles::ALL).await
}
