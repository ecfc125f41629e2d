//! `GET /healthz`: the process is up. Needs no token.

use axum::Json;
use serde_json::{json, Value};

/// Answers 200 while the process serves requests.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
