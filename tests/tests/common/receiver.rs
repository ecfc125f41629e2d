//! A webhook receiver of the test's own: a real HTTP server on loopback that records every
//! request and answers as told (fail the next few, fail all, answer slowly).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its headers, names lowercased.
    pub headers: HashMap<String, String>,
    /// Its body.
    pub body: String,
    /// The status it was answered with.
    pub answered: u16,
}

impl Received {
    /// The CloudEvents it carried (one, or a batch's).
    pub fn events(&self) -> Vec<Value> {
        match serde_json::from_str::<Value>(&self.body).unwrap() {
            Value::Array(events) => events,
            event => vec![event],
        }
    }
}

#[derive(Default)]
struct Behaviour {
    requests: Mutex<Vec<Received>>,
    arrived: AtomicUsize,
    fail_next: AtomicUsize,
    failing: AtomicBool,
    delay_ms: AtomicU64,
}

/// The receiver; it stops when dropped.
pub struct Receiver {
    /// Where it listens (`http://127.0.0.1:<port>/hook`).
    pub url: String,
    behaviour: Arc<Behaviour>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(behaviour: Arc<Behaviour>, headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    behaviour.arrived.fetch_add(1, Ordering::SeqCst);
    let delay = behaviour.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = if behaviour.failing.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else if behaviour
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let headers = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = String::from_utf8_lossy(&body).into_owned();
    behaviour.requests.lock().unwrap().push(Received { headers, body, answered: status.as_u16() });
    (status, if status.is_success() { "taken" } else { "not now" })
}

impl Receiver {
    /// Starts one on a free loopback port.
    pub async fn start() -> Self {
        let behaviour = Arc::new(Behaviour::default());
        let shared = behaviour.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let behaviour = shared.clone();
            async move { receive(behaviour, headers, body).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, behaviour, task }
    }

    /// Answers the next `count` requests 500.
    pub fn fail_next(&self, count: usize) {
        self.behaviour.fail_next.store(count, Ordering::SeqCst);
    }

    /// Answers every request 503 (true) or as usual (false).
    pub fn set_failing(&self, failing: bool) {
        self.behaviour.failing.store(failing, Ordering::SeqCst);
    }

    /// Answers each request after `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.behaviour.delay_ms.store(u64::try_from(delay.as_millis()).unwrap(), Ordering::SeqCst);
    }

    /// Requests that have arrived, answered or not yet.
    pub fn arrived(&self) -> usize {
        self.behaviour.arrived.load(Ordering::SeqCst)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.behaviour.requests.lock().unwrap().clone()
    }

    /// The events of the requests answered 2xx, in the order they came, duplicates included.
    pub fn taken(&self) -> Vec<Value> {
        self.requests().iter().filter(|r| r.answered < 300).flat_map(Received::events).collect()
    }

    /// The distinct events taken (the first of each id), in the order they came.
    pub fn distinct(&self) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        self.taken()
            .into_iter()
            .filter(|event| seen.insert(event["id"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// Verifies every request with the Standard Webhooks reference library
    /// (`scripts/verify-webhooks`), with `secret`: how many verified. A request that does not
    /// fails the test.
    pub fn verify_with_reference(&self, secret: &str) -> usize {
        verify_with_reference(secret, &self.requests())
    }
}

/// [`Receiver::verify_with_reference`] for `requests`.
pub fn verify_with_reference(secret: &str, requests: &[Received]) -> usize {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut lines = String::new();
    for request in requests {
        let line = serde_json::json!({"secret": secret, "headers": request.headers, "body": request.body});
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    std::fs::write(file.path(), lines).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/verify-webhooks");
    let output = std::process::Command::new(script).arg(file.path()).output().unwrap();
    assert!(
        output.status.success(),
        "the reference library refused a signature: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
}
