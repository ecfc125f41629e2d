//! Structured logs of the real binary: with `COLLOQUY_LOG_FORMAT=json`, every answered request is
//! one JSON line inside a `request` span that carries the request id, and that id is the one the
//! client sent as `X-Request-Id`, got back, and finds in the metadata of the events it caused.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use common::free_port;

#[tokio::test]
async fn json_logs_carry_the_request_id_that_the_events_record() {
    let data_dir = tempfile::tempdir().unwrap();
    let log_path = data_dir.path().join("colloquy.log");
    let token = "logs-test-token-0123456789abcdef";
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .arg("serve")
        .env("COLLOQUY_DATA_DIR", data_dir.path().join("data"))
        .env("COLLOQUY_BOOTSTRAP_TOKEN", token)
        .env("COLLOQUY_LISTEN", format!("127.0.0.1:{port}"))
        .env("COLLOQUY_LOG_FORMAT", "json")
        .env("COLLOQUY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "colloquy serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = reqwest::Client::new();
    let request_id = "req-logs-7f3a9c2e";
    let created = client
        .post(format!("{base}/v1/contacts"))
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .json(&json!({"first_name": "Ana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["x-request-id"], request_id, "the id comes back");
    let contact: Value = created.json().await.unwrap();
    let events: Value = client
        .get(format!("{base}/v1/contacts/{}/events", contact["id"].as_str().unwrap()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["data"][0]["metadata"]["request_id"], request_id, "{events}");
    // Without one, the server makes one up and returns it.
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert!(!health.headers()["x-request-id"].is_empty());

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "colloquy serve did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    assert!(!lines.is_empty());
    let answered = lines
        .iter()
        .find(|line| line["span"]["name"] == "request" && line["span"]["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no log line in the request's span:\n{log}"));
    assert_eq!(answered["span"]["method"], "POST");
    assert_eq!(answered["span"]["uri"], "/v1/contacts");
    assert!(answered["fields"]["status"].as_u64() == Some(201), "{answered}");
}
