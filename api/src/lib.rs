//! Colloquy's HTTP API: axum routes over the command runner and the aggregates' state, with one
//! mapping from errors to problem+json. The only crate that knows HTTP.

pub mod admission;
pub mod bounded;
pub mod extract;
pub mod idempotency;
pub mod instant;
pub mod listener;
pub mod log_feed;
pub mod metrics;
pub mod openapi;
pub mod paging;
pub mod participants;
pub mod point_in_time;
pub mod problem;
pub mod process;
pub mod routes;
pub mod serde_util;
pub mod state;
pub mod views;
pub mod webhook_delivery;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use colloquy_infra::Config;

use crate::openapi::ApiDoc;
use crate::problem::ApiError;
pub use crate::process::{Roles, Running, ShutdownHandle};
use crate::routes::{
    audit, calendars, contacts, conversations, events, groups, health, inbox, inbox_row, messages, recompute,
    reports, revert, sla, stream, timers, tokens, webhooks, whatif,
};
pub use crate::state::AppState;

/// Largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The tenant the embedded default creates on first start.
pub const DEFAULT_TENANT: &str = "default";

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The router, as both `main` and the tests build it.
pub fn app(state: AppState) -> Router {
    let (router, _openapi) = routes().split_for_parts();
    router
        .fallback(|| async { ApiError::not_found("this route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::layer))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), metrics::layer))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(extract::refuse_oversized_bodies))
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| -> Response {
            ApiError::internal(&"a request handler panicked").into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %request.method(), uri = %request.uri(), request_id)
        })
        // One line per answered request, with its status and latency, inside the request's span.
        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
        // A 5xx is logged again as a failure: at WARN, since the ones that are ours to fix (500)
        // log their cause at ERROR where they are made (`ApiError::internal`), and the rest are
        // 503s that say retry (a read model behind `min_position`, the store unreachable).
        .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        // Outermost, so that a request turned away costs no more than its answer: no request id,
        // no trace line (an overloaded server would log thousands); `/metrics` counts them.
        .layer(axum::middleware::from_fn_with_state(state.clone(), admission::layer))
        .with_state(state)
}

/// Every route with its documentation. `routes!` takes each handler's method and path from its
/// `#[utoipa::path]`, so what is served and what `/openapi.json` describes come from one place
/// (handlers of one path go in one `routes!`).
pub fn routes() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(events::list))
        .routes(routes!(timers::list))
        .routes(routes!(stream::stream))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(contacts::create))
        .routes(routes!(contacts::get, contacts::patch))
        .routes(routes!(contacts::events))
        .routes(routes!(contacts::erase))
        .routes(routes!(revert::revert))
        .routes(routes!(conversations::open, inbox::list))
        .routes(routes!(inbox::counts))
        .routes(routes!(inbox::resolve))
        .routes(routes!(conversations::get, conversations::patch, conversations::delete))
        .routes(routes!(conversations::change_status))
        .routes(routes!(conversations::assign, conversations::unassign))
        .routes(routes!(conversations::change_labels))
        .routes(routes!(conversations::mark_read))
        .routes(routes!(conversations::events))
        .routes(routes!(sla::conversation_sla, sla::apply_policy))
        .routes(routes!(sla::conversation_sla_events))
        .routes(routes!(calendars::create, calendars::list))
        .routes(routes!(calendars::get, calendars::replace, calendars::delete))
        .routes(routes!(calendars::versions))
        .routes(routes!(calendars::import_holidays))
        .routes(routes!(sla::create, sla::list))
        .routes(routes!(sla::get, sla::replace, sla::delete))
        .routes(routes!(sla::versions))
        .routes(routes!(whatif::what_if))
        .routes(routes!(recompute::recompute))
        .routes(routes!(reports::list))
        .routes(routes!(reports::of_conversation))
        .routes(routes!(reports::figures::summary))
        .routes(routes!(reports::figures::timeseries))
        .routes(routes!(reports::figures::by))
        .routes(routes!(reports::figures::first_response_distribution))
        .routes(routes!(reports::figures::inbox_labels))
        .routes(routes!(reports::figures::conversations))
        .routes(routes!(reports::figures::live))
        .routes(routes!(reports::definitions::list))
        .routes(routes!(reports::definitions::make_current))
        .routes(routes!(reports::definitions::compare))
        .routes(routes!(audit::list))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::get, webhooks::patch, webhooks::delete))
        .routes(routes!(webhooks::versions))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::replay))
        .routes(routes!(webhooks::resume))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::ping))
        .routes(routes!(inbox_row::get))
        .routes(routes!(messages::add, messages::list))
        .routes(routes!(messages::get, messages::patch))
        .routes(routes!(messages::report_delivery))
        .routes(routes!(groups::create))
        .routes(routes!(groups::get, groups::patch))
        .routes(routes!(groups::members::members, groups::members::add_members))
        .routes(routes!(groups::members::change_role, groups::members::remove_member))
        .routes(routes!(groups::invite))
        .routes(routes!(groups::revoke_invite))
        .routes(routes!(groups::join_requests, groups::handle_join_requests))
        .routes(routes!(groups::change_settings))
        .routes(routes!(groups::leave))
        .routes(routes!(groups::sync))
        .routes(routes!(groups::provider::report_join))
        .routes(routes!(groups::provider::report_activity))
        .routes(routes!(groups::provider::report_view))
        .routes(routes!(groups::contact_groups))
        .routes(routes!(groups::events));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::docs))
        .routes(routes!(openapi::docs_file))
        .nest("/v1", v1)
}

/// Starts everything `colloquy serve` runs: the API, the relay and the projectors.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    process::start(config, Roles::ALL).await
}
