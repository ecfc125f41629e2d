//! `GET /healthz`: the process is up. `GET /readyz`: it can serve: the store answers, NATS
//! answers when this process relays or projects through it, and every read model is within
//! [`MAX_READY_LAG`] events of the log's head and moving while it trails. Neither needs a token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};

use crate::state::AppState;

/// Most events a read model may trail the log by for the server to count as ready.
pub const MAX_READY_LAG: i64 = 10_000;

/// How long `/readyz` waits for JetStream to answer; probes usually time out after a second or two.
pub const NATS_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// What `/readyz` has seen of each read model that trails the log: the position it was at, and
/// since when it has been there.
#[derive(Debug, Default)]
pub struct Progress(Mutex<HashMap<String, (i64, Instant)>>);

impl Progress {
    /// How long read model `name`, now at `position` and `lag` events behind the head, has
    /// trailed without moving, as far as the checks up to `now` saw. Zero when it has caught up
    /// or moved since the last check.
    pub fn still_for(&self, name: &str, position: i64, lag: i64, now: Instant) -> Duration {
        let mut seen = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if lag <= 0 {
            seen.remove(name);
            return Duration::ZERO;
        }
        match seen.get(name) {
            Some(&(at, since)) if at == position => now.saturating_duration_since(since),
            _ => {
                seen.insert(name.to_owned(), (position, now));
                Duration::ZERO
            }
        }
    }
}

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
        (status = 200, description = "Ready: the store answers, NATS answers when this process uses it, and every read model is within 10,000 events of the log's head and, while it trails, has moved within `COLLOQUY_READY_STUCK_AFTER_SECS` (60 s).",
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
                "projection:group_conversations": {"status": "stuck", "position": 120, "lag": 2, "still_for_secs": 75},
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
        match colloquy_infra::checkpoints::consumer_lags(state.store(), head, &projections).await {
            Ok(lags) => {
                let now = Instant::now();
                for consumer in lags.into_iter().filter(|c| projections.contains(&c.name)) {
                    let still =
                        state.progress().still_for(&consumer.name, consumer.position, consumer.lag, now);
                    // A read model that trails and does not move (waiting for events that never
                    // come, or on a lock) is not ready, however small its lag.
                    let (status, ok) = if still >= state.stuck_after() {
                        ("stuck", false)
                    } else if consumer.lag > MAX_READY_LAG {
                        ("lagging", false)
                    } else {
                        ("ok", true)
                    };
                    ready &= ok;
                    let mut check =
                        json!({"status": status, "position": consumer.position, "lag": consumer.lag});
                    if !ok {
                        check["still_for_secs"] = json!(still.as_secs());
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_model_is_still_while_it_trails_at_one_position() {
        let progress = Progress::default();
        let start = Instant::now();
        let later = |secs| start + Duration::from_secs(secs);
        assert_eq!(progress.still_for("p", 10, 2, start), Duration::ZERO);
        assert_eq!(progress.still_for("p", 10, 2, later(30)), Duration::from_secs(30));
        assert_eq!(
            progress.still_for("p", 10, 5, later(70)),
            Duration::from_secs(70),
            "a growing lag does not reset it"
        );
        assert_eq!(progress.still_for("p", 11, 4, later(71)), Duration::ZERO, "moving resets it");
        assert_eq!(progress.still_for("p", 11, 4, later(72)), Duration::from_secs(1));
        assert_eq!(progress.still_for("p", 11, 0, later(200)), Duration::ZERO, "caught up is never still");
        assert_eq!(progress.still_for("p", 11, 1, later(201)), Duration::ZERO, "the clock starts again");
        assert_eq!(progress.still_for("q", 11, 1, later(202)), Duration::ZERO, "each read model on its own");
    }
}
