//! `load --webhooks`: what webhook deliveries can carry, and how far behind they run.
//!
//! 1. Throughput: a backlog of customer messages recorded before any subscription, then one
//!    subscription to a receiver in this process (answering at once), replayed from position 1:
//!    events delivered per second until the receiver has them all; structured (one event per
//!    request), then batched (up to 100).
//! 2. Lag: ten subscriptions, one of them to a receiver that answers 503 to everything, while
//!    messages are sent at a steady 1,000 per second: for the nine healthy ones, each event's lag
//!    (when its receiver got it minus the event's recorded `time`), and how many events they
//!    were short of the log when the load stopped; structured, then batched.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{json, Value};

use super::{ms, open_conversations, Latencies, Server};

/// A receiver: counts the events it takes and keeps each one's lag.
struct Receiver {
    url: String,
    taken: Arc<AtomicU64>,
    lags: Arc<Mutex<Vec<Duration>>>,
    requests: Arc<AtomicU64>,
}

impl Receiver {
    async fn start(failing: bool) -> anyhow::Result<Self> {
        let taken = Arc::new(AtomicU64::new(0));
        let lags = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(failing));
        let requests = Arc::new(AtomicU64::new(0));
        let (t, l, f, r) = (taken.clone(), lags.clone(), failing, requests.clone());
        let app = axum::Router::new().fallback(move |body: Bytes| {
            let (taken, lags, failing, requests) = (t.clone(), l.clone(), f.clone(), r.clone());
            async move {
                requests.fetch_add(1, Ordering::Relaxed);
                if failing.load(Ordering::Relaxed) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let now = chrono::Utc::now();
                let events = match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Array(events)) => events,
                    Ok(event) => vec![event],
                    Err(_) => return StatusCode::BAD_REQUEST,
                };
                let mut kept = lags.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for event in &events {
                    let time =
                        event["time"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                    if let Some(time) = time {
                        kept.push((now - time.with_timezone(&chrono::Utc)).to_std().unwrap_or_default());
                    }
                }
                taken.fetch_add(events.len() as u64, Ordering::Relaxed);
                StatusCode::OK
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, taken, lags, requests })
    }

    fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }
}

async fn subscribe(server: &Server, url: &str, mode: &str) -> anyhow::Result<String> {
    let (status, _, body) =
        server.post("/v1/webhooks", json!({"name": "bench", "url": url, "content_mode": mode})).await;
    anyhow::ensure!(status == 201, "the subscription was refused: {body}");
    Ok(body["id"].as_str().unwrap_or_default().to_owned())
}

/// Sends `count` customer messages over `conversations`, 32 at a time.
async fn backlog(server: &Arc<Server>, conversations: &Arc<Vec<String>>, count: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (server, conversations, next) = (server.clone(), conversations.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return;
                    }
                    message(&server, &conversations, n).await;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

async fn message(server: &Server, conversations: &[String], n: u64) -> bool {
    let id = &conversations[usize::try_from(n).unwrap_or(0) % conversations.len()];
    let body = json!({"sender": {"kind": "customer"}, "text": format!("message {n}")});
    server.post(&format!("/v1/conversations/{id}/messages"), body).await.0 == 201
}

/// Replays a new subscription in `mode` over the whole log: events per second delivered.
async fn throughput(server: &Server, total: u64, mode: &str) -> anyhow::Result<f64> {
    let receiver = Receiver::start(false).await?;
    let id = subscribe(server, &receiver.url, mode).await?;
    let started = Instant::now();
    let (status, _, body) =
        server.post(&format!("/v1/webhooks/{id}/replay?from_position=1"), json!({})).await;
    anyhow::ensure!(status == 202, "the replay was refused: {body}");
    while receiver.taken() < total {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the replay did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = receiver.taken() as f64 / started.elapsed().as_secs_f64();
    let (status, _) = server.call_delete(&format!("/v1/webhooks/{id}")).await;
    anyhow::ensure!(status == 204, "the subscription was not deleted");
    Ok(rate)
}

/// Runs both parts and prints their tables.
pub async fn run(server: Server, quick: bool, seconds: u64) -> anyhow::Result<()> {
    let server = Arc::new(server);
    let conversations = Arc::new(open_conversations(&server, if quick { 20 } else { 200 }).await);
    let backlog_size: u64 = if quick { 2_000 } else { 20_000 };
    backlog(&server, &conversations, backlog_size).await;
    // Every event of the log: the contacts and conversations opened, and the messages.
    let total = backlog_size + 2 * conversations.len() as u64;
    println!(
        "## Webhook deliveries: throughput (a backlog of {total} events replayed to one local receiver)\n"
    );
    println!("| content mode | events/s |");
    println!("|---|---|");
    for mode in ["structured", "batched"] {
        let rate = throughput(&server, total, mode).await?;
        println!("| {mode} | {rate:.0} |");
    }

    println!("\n## Webhook deliveries: lag at 1,000 events/s, 10 subscribers, one failing\n");
    println!("| content mode | sent/s | every event received | lag p50 ms | p99 ms | max ms | behind at the end (most of 9) | drained after | failing one tried |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for mode in ["structured", "batched"] {
        lag(&server, &conversations, mode, seconds).await?;
    }
    Ok(())
}

/// Ten subscriptions in `mode`, one failing, while messages go at 1,000 a second for `seconds`:
/// a row of the lag table. The subscriptions are deleted afterwards.
async fn lag(
    server: &Arc<Server>,
    conversations: &Arc<Vec<String>>,
    mode: &str,
    seconds: u64,
) -> anyhow::Result<()> {
    let healthy: Vec<Receiver> =
        futures::future::try_join_all((0..9).map(|_| Receiver::start(false))).await?;
    let failing = Receiver::start(true).await?;
    let mut subscriptions = Vec::new();
    for receiver in healthy.iter().chain(std::iter::once(&failing)) {
        subscriptions.push(subscribe(server, &receiver.url, mode).await?);
    }
    // Deliveries start once the subscriptions' creations are projected and taken up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rate = 1_000u64;
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let mut tasks = Vec::new();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        for _ in 0..rate / 100 {
            let (server, conversations, sent) = (server.clone(), conversations.clone(), sent.clone());
            n += 1;
            tasks.push(tokio::spawn(async move {
                if message(&server, &conversations, n).await {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let sent = sent.load(Ordering::Relaxed);
    let behind: Vec<u64> = healthy.iter().map(|r| sent.saturating_sub(r.taken())).collect();
    let drained = Instant::now();
    while healthy.iter().any(|r| r.taken() < sent) && drained.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = drained.elapsed();
    let mut lags = Latencies(
        healthy
            .iter()
            .flat_map(|r| r.lags.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
            .collect(),
    );
    println!(
        "| {mode} | {:.0} | {} | {} | {} | {} | {} | {} ms | {} times |",
        sent as f64 / elapsed.as_secs_f64(),
        if healthy.iter().all(|r| r.taken() >= sent) { "yes" } else { "no" },
        ms(lags.percentile(0.5)),
        ms(lags.percentile(0.99)),
        ms(lags.percentile(1.0)),
        behind.iter().max().copied().unwrap_or(0),
        drain.as_millis(),
        failing.requests.load(Ordering::Relaxed)
    );
    for id in subscriptions {
        server.call_delete(&format!("/v1/webhooks/{id}")).await;
    }
    Ok(())
}
