//! `GET /healthz`: the process is up. `GET /readyz`: it can serve: the store answers, NATS
//! answers when this process relays or projects through it, and every read model is within
//! [`MAX_READY_LAG`] events of the log's head. Neither needs a token.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};

use crate::state::AppState;

/// Most events a read model may trail the log by for the server to count as ready.
pub const MAX_READY_LAG: i64 = 10_000;

/// How long `/readyz` waits for JetStream to answer; probes usually time out after a second or two.
pub const NATS_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// Answers 200 while the process serves requests.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up.", body = Object, example = json!({"status": "ok"})))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Answers 200 when ready, 503 with the failing checks otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: the store answers, NATS answers when this process uses it, and every read model is within 10,000 events of the log's head.",
            body = Object,
            example = json!({"status": "ready", "checks": {
                "store": {"status": "ok", "log_head": 1042},
                "nats": {"status": "ok"},
                "projection:conversation_list": {"status": "ok", "position": 1042, "lag": 0}}})),
        (status = 503, description = "Not ready, with the failing checks.", body = Object,
            example = json!({"status": "not_ready", "checks": {
                "store": {"status": "ok", "log_head": 52000},
                "nats": {"status": "failing", "error": "nats: not connected (pending)"},
                "projection:conversation_list": {"status": "lagging", "position": 30000, "lag": 22000},
                "projection:group_members": {"status": "failing", "position": 41, "attempts": 3,
                    "since": "2026-12-05T08:00:00Z", "error": "event group/0192f3c4-0000-7000-8000-000000000001#7 is unreadable: ..."}}}))
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let mut checks = Map::new();
    let mut ready = true;
    let head = match colloquy_infra::log::read_head(state.store()).await {
        Ok(head) => {
            checks.insert("store".into(), json!({"status": "ok", "log_head": head}));
            Some(head)
        }
        Err(error) => {
            ready = false;
            checks.insert("store".into(), json!({"status": "failing", "error": error.to_string()}));
            None
        }
    };
    // An API-only process (`Roles { http: true, .. }` without relay or projectors) never
    // connects to NATS, so it has nothing to check there.
    if let Some(jetstream) = state.jetstream() {
        let check = match jetstream.check(NATS_CHECK_TIMEOUT).await {
            Ok(()) => json!({"status": "ok"}),
            Err(error) => {
                ready = false;
                json!({"status": "failing", "error": error.to_string()})
            }
        };
        checks.insert("nats".into(), check);
    }
    if let Some(head) = head {
        let projections: Vec<String> = state.projectors().iter().map(|p| p.checkpoint_name()).collect();
        match colloquy_infra::relay::consumer_lags(state.store(), head, &projections).await {
            Ok(lags) => {
                for consumer in lags.into_iter().filter(|c| projections.contains(&c.name)) {
                    let ok = consumer.lag <= MAX_READY_LAG;
                    ready &= ok;
                    let check = json!({"status": if ok { "ok" } else { "lagging" }, "position": consumer.position, "lag": consumer.lag});
                    checks.insert(consumer.name, check);
                }
            }
            Err(error) => {
                ready = false;
                checks.insert("projections".into(), json!({"status": "failing", "error": error.to_string()}));
            }
        }
    }
    // A projector of this process that an error keeps from applying the log is not ready,
    // whatever its lag: it names where it is stopped and why.
    for projector in state.projectors().iter() {
        if let Some(stall) = projector.stall() {
            ready = false;
            let check = json!({"status": "failing", "position": stall.checkpoint, "error": stall.error,
                               "since": stall.since, "attempts": stall.attempts});
            checks.insert(projector.checkpoint_name(), check);
        }
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"status": if ready { "ready" } else { "not_ready" }, "checks": checks})))
}
