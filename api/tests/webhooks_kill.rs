//! Webhooks across a crash, on both stores: `colloquy serve` SIGKILLed while it delivers to a
//! (slow) receiver, one event per request or while a batch waits for its answer, then started
//! again. Delivery is at least once: every event the tenant
//! recorded after the subscription reaches the receiver, none is missing, and each aggregate's
//! events arrive in order (a redelivery of what was in flight comes before anything newer).
//!
//! It lives in api/ because only this package's tests can run the `colloquy` binary it builds.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/tests/common/mod.rs"]
mod common;
mod worker;

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use common::receiver::Receiver;
use common::{eventually, free_port, master_key_text, TestDatabase};
use worker::Worker;

struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request =
            self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn up(&self) {
        eventually(Duration::from_secs(30), "the server up", || async {
            let health = self.client.get(format!("{}/healthz", self.base)).send().await.ok()?;
            health.status().is_success().then_some(())
        })
        .await;
    }
}

/// How the subscription takes its events, and when the process is killed.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// One event per request; killed once 18 requests came.
    Structured,
    /// Batches; killed while a batch is with the receiver, unanswered.
    Batched,
}

/// SIGKILLs the server and starts it again: how many distinct events the receiver had taken.
fn crash(server: &mut Worker, receiver: &Receiver, mode: Mode) -> usize {
    server.kill();
    let at_kill = receiver.distinct().len();
    if mode == Mode::Batched {
        assert!(
            receiver.arrived() > receiver.requests().len(),
            "a batch was in flight when the process died"
        );
    }
    server.spawn();
    at_kill
}

async fn crash_mid_delivery(postgres: bool, mode: Mode) {
    let data_dir = tempfile::tempdir().unwrap();
    let database = if postgres { Some(TestDatabase::create().await) } else { None };
    let port = free_port();
    let token = format!("cq_test_{}", uuid::Uuid::new_v4().simple());
    let mut env = vec![
        ("COLLOQUY_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
        ("COLLOQUY_BOOTSTRAP_TOKEN".to_owned(), token.clone()),
        ("COLLOQUY_MASTER_KEY".to_owned(), master_key_text().to_owned()),
        ("COLLOQUY_WEBHOOK_ALLOW_PRIVATE".to_owned(), "true".to_owned()),
        ("COLLOQUY_WEBHOOK_RETRY_BASE_MS".to_owned(), "100".to_owned()),
        ("COLLOQUY_WEBHOOK_LEASE_MS".to_owned(), "2000".to_owned()),
    ];
    match &database {
        Some(database) => env.push(("COLLOQUY_DATABASE_URL".to_owned(), database.url.clone())),
        None => env.push(("COLLOQUY_DATA_DIR".to_owned(), data_dir.path().display().to_string())),
    }
    let mut server = Worker::start("serve", env);
    let api = Api { base: format!("http://127.0.0.1:{port}"), token, client: reqwest::Client::new() };
    api.up().await;

    let receiver = Receiver::start().await;
    let content_mode = match mode {
        Mode::Structured => {
            receiver.set_delay(Duration::from_millis(25));
            "structured"
        }
        Mode::Batched => {
            receiver.set_delay(Duration::from_millis(300));
            "batched"
        }
    };
    let body = json!({"name": "crm", "url": receiver.url, "content_mode": content_mode});
    let created = api.post("/v1/webhooks", body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let mut conversations = Vec::new();
    for _ in 0..4 {
        let contact = api.post("/v1/contacts", json!({"first_name": "Ann"})).await;
        let body = json!({"contact_id": contact["id"], "channel": "whatsapp"});
        conversations.push(api.post("/v1/conversations", body).await["id"].as_str().unwrap().to_owned());
    }
    // The messages come in rounds, a little apart, so that deliveries run while they come (in
    // batches, more than one). The process is killed once `due` says so: in the structured mode
    // a third of the way through, in the batched one while its second batch waits for the
    // receiver's answer; it is started again at once, and the rounds go on.
    let due = || match mode {
        Mode::Structured => receiver.requests().len() >= 18,
        Mode::Batched => receiver.arrived() >= 2,
    };
    let mut at_kill = None;
    for round in 0..12 {
        for conversation in &conversations {
            let body = json!({"sender": {"kind": "customer"}, "text": format!("m{round}")});
            api.post(&format!("/v1/conversations/{conversation}/messages"), body).await;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        if at_kill.is_none() && due() {
            at_kill = Some(crash(&mut server, &receiver, mode));
            api.up().await;
        }
    }
    let at_kill = match at_kill {
        Some(at_kill) => at_kill,
        None => {
            eventually(Duration::from_secs(20), "deliveries under way", || async { due().then_some(()) })
                .await;
            let at_kill = crash(&mut server, &receiver, mode);
            api.up().await;
            at_kill
        }
    };

    let (status, webhook) = api.call(reqwest::Method::GET, &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{webhook}");
    let (_, page) = api.call(reqwest::Method::GET, "/v1/events?after=0&limit=1000", None).await;
    let logged: Vec<Value> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["aggregate_type"] != "webhook")
        .cloned()
        .collect();
    assert_eq!(logged.len(), 4 * 2 + 48);
    assert!(at_kill < logged.len(), "killed before the end ({at_kill} of {})", logged.len());
    eventually(Duration::from_secs(40), "every event delivered after the restart", || async {
        (receiver.distinct().len() >= logged.len()).then_some(())
    })
    .await;
    let distinct = receiver.distinct();
    let mut got: Vec<&str> = distinct.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = logged.iter().map(|e| e["metadata"]["event_id"].as_str().unwrap()).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "every event, none missing, none foreign");
    let mut last: HashMap<String, i64> = HashMap::new();
    for event in &distinct {
        let subject = event["subject"].as_str().unwrap().to_owned();
        let sequence = event["sequence"].as_i64().unwrap();
        let before = last.insert(subject.clone(), sequence).unwrap_or(0);
        assert_eq!(sequence, before + 1, "{subject}: {sequence} came after {before}");
    }
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_mid_delivery_loses_nothing() {
    crash_mid_delivery(false, Mode::Structured).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_mid_delivery_loses_nothing() {
    crash_mid_delivery(true, Mode::Structured).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_mid_batch_loses_nothing() {
    crash_mid_delivery(false, Mode::Batched).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_mid_batch_loses_nothing() {
    crash_mid_delivery(true, Mode::Batched).await;
}
