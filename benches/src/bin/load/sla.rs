//! `load --sla`: what the SLA clocks cost and how late the timer service is.
//!
//! 1. The pair: the command mix at each client count on conversations opened before any policy
//!    exists, then, on the same server, on as many conversations opened after a policy that
//!    times every conversation (first and next response, total resolution, assignment response,
//!    with a warning each; or the metrics `--sla-metrics` names); then how long the clocks take
//!    to catch up once the load stops.
//! 2. Firing: many conversations opened under a policy whose first-response threshold runs out
//!    while the mix keeps running; each breach's lateness is the time its `SlaTimerBreached` was
//!    recorded minus its computed due time (`data.at`), read from the global log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{cpu, load, measured, ms, open_conversations, Latencies, Server};

/// A phase's CPU per command, one table cell per process.
fn cost_cells(cost: Option<cpu::PerCommand>) -> String {
    cost.map_or_else(
        || "- | - | - | - | -".to_owned(),
        |c| {
            format!(
                "{:.3} | {:.3} | {:.3} | {:.3} | {:.2}",
                c.server, c.postgres, c.nats, c.load, c.cores_busy
            )
        },
    )
}

async fn get_json(server: &Server, path: &str) -> Value {
    match server.client.get(format!("{}{path}", server.base)).bearer_auth(&server.token).send().await {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn create_policy(server: &Server, body: Value) -> anyhow::Result<()> {
    let (status, _, reply) = server.post("/v1/sla-policies", body).await;
    anyhow::ensure!(status == 201, "the policy was refused: {reply}");
    Ok(())
}

/// How many of the sampled conversations have an observe job pending (their clocks have not seen
/// all their events).
async fn behind(server: &Server, sample: &[String]) -> usize {
    let mut behind = 0;
    for id in sample {
        let pending = get_json(server, &format!("/v1/timers?conversation_id={id}")).await;
        let observing = pending["data"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|job| job["id"].as_str().is_some_and(|job_id| job_id.starts_with("observe/")));
        behind += usize::from(observing);
    }
    behind
}

/// Waits until no sampled conversation has an observe job pending (its clocks have seen its
/// events); how long that took.
async fn catch_up(server: &Server, sample: &[String], timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if behind(server, sample).await == 0 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Opens `count` conversations in inbox `inbox`, `clients` at a time; their ids.
async fn open_in_inbox(server: &Arc<Server>, inbox: &str, count: usize, clients: usize) -> Vec<String> {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (server, next, inbox) = (server.clone(), next.clone(), inbox.to_owned());
            tokio::spawn(async move {
                let mut opened = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count as u64 {
                        return opened;
                    }
                    let (_, _, contact) = server
                        .post("/v1/contacts", json!({"first_name": format!("Waiting {n}"), "phone": format!("+1415556{:04}", n % 10_000)}))
                        .await;
                    let contact_id = contact["id"].as_str().unwrap_or_default().to_owned();
                    let (status, _, conversation) = server
                        .post("/v1/conversations", json!({"contact_id": contact_id, "channel": "whatsapp", "inbox_id": inbox}))
                        .await;
                    if let (201, Some(id)) = (status, conversation["id"].as_str()) {
                        opened.push(id.to_owned());
                    }
                }
            })
        })
        .collect();
    let mut opened = Vec::new();
    for task in tasks {
        opened.extend(task.await.unwrap_or_default());
    }
    opened
}

/// The lateness of every breach in the log after `after`, and the log's new end.
async fn breach_lateness(server: &Server, mut after: i64) -> (Vec<Duration>, i64) {
    let mut late = Vec::new();
    loop {
        let page = get_json(server, &format!("/v1/events?after={after}&limit=1000")).await;
        let events = page["data"].as_array().cloned().unwrap_or_default();
        for event in &events {
            after = event["position"].as_i64().unwrap_or(after);
            if event["event_type"] != "SlaTimerBreached" {
                continue;
            }
            let at =
                event["data"]["at"].as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
            let recorded = event["metadata"]["recorded_at"]
                .as_str()
                .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
            if let (Some(at), Some(recorded)) = (at, recorded) {
                late.push((recorded - at).to_std().unwrap_or_default());
            }
        }
        if events.len() < 1000 {
            return (late, after);
        }
    }
}

/// The metrics the pair's policy times by default.
pub(super) const METRICS: [&str; 4] =
    ["first_response", "next_response", "total_resolution", "assignment_response"];

/// The pair's policy's target for `metric`: a day for the total resolution, an hour for the
/// others, the first and next response with a warning at half of it.
fn target(metric: &str) -> Value {
    match metric {
        "total_resolution" => json!({"metric": metric, "threshold_seconds": 86400}),
        "assignment_response" => json!({"metric": metric, "threshold_seconds": 3600}),
        _ => json!({"metric": metric, "threshold_seconds": 3600, "warnings": [{"percent": 50}]}),
    }
}

pub(super) async fn run(
    server: &Arc<Server>,
    quick: bool,
    clients: &[usize],
    seconds: u64,
    timers: Option<usize>,
    threshold: Option<u64>,
    metrics: &[String],
) -> anyhow::Result<()> {
    let per_set = if quick { 50 } else { 500 };
    println!(
        "## SLA clocks: the command mix without and with a policy timing {} ({seconds} s per row)\n",
        metrics.join(", ")
    );
    let without = Arc::new(open_conversations(server, per_set).await);
    let mut before = Vec::new();
    for &c in clients {
        before.push(measured(server, &without, c, seconds).await);
    }
    create_policy(
        server,
        json!({"name": "Everything", "rank": 10,
               "targets": metrics.iter().map(|metric| target(metric)).collect::<Vec<_>>()}),
    )
    .await?;
    let with = Arc::new(open_conversations(server, per_set).await);
    let mut after = Vec::new();
    for &c in clients {
        after.push(measured(server, &with, c, seconds).await);
    }
    println!(
        "| clients | commands/s without SLA | commands/s with SLA | ratio | p99 ms without | p99 ms with |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for ((b, _), (a, _)) in before.iter().zip(&after) {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {} | {} |",
            b.clients,
            b.per_second,
            a.per_second,
            a.per_second / b.per_second.max(1e-9),
            ms(b.p99),
            ms(a.p99)
        );
    }
    println!(
        "\nCPU per command answered, ms of one core (from `/proc`), without and with SLA (work the clocks \
         left for after the window is not in it):\n"
    );
    println!("| clients | SLA | server | PostgreSQL | NATS | load generator | cores busy |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for ((b, b_cost), (_, a_cost)) in before.iter().zip(&after) {
        println!("| {} | without | {} |", b.clients, cost_cells(*b_cost));
        println!("| {} | with | {} |", b.clients, cost_cells(*a_cost));
    }
    let sample: Vec<String> = with.iter().take(20).cloned().collect();
    match catch_up(server, &sample, Duration::from_secs(600)).await {
        Some(took) => println!(
            "\nThe clocks had seen every sampled conversation's last event {} ms after the load stopped.\n",
            took.as_millis()
        ),
        None => println!("\nThe clocks had not caught up 600 s after the load stopped.\n"),
    }

    let timers = timers.unwrap_or(if quick { 500 } else { 100_000 });
    let threshold = threshold.unwrap_or(if quick { 20 } else { 150 });
    let start_of_log = {
        // The log's end now: breaches after it are this phase's.
        let mut after = 0;
        loop {
            let page = get_json(server, &format!("/v1/events?after={after}&limit=1000")).await;
            let events = page["data"].as_array().cloned().unwrap_or_default();
            after = events.last().and_then(|e| e["position"].as_i64()).unwrap_or(after);
            if events.len() < 1000 {
                break after;
            }
        }
    };
    create_policy(
        server,
        json!({"name": "Timers", "rank": 1, "conditions": {"inbox_ids": ["timers"]},
               "targets": [{"metric": "first_response", "threshold_seconds": threshold}]}),
    )
    .await?;
    println!("## Firing {timers} timers due {threshold} s after their conversation opened, under the mix at 8 clients (from the first due until 10 s past the last)\n");
    let opening = Instant::now();
    let opened = open_in_inbox(server, "timers", timers, 32).await;
    let opened_in = opening.elapsed();
    // Evenly through the opening: whose clocks have not yet seen their opening, so have no timer.
    let sample: Vec<String> = opened.iter().step_by((opened.len() / 200).max(1)).cloned().collect();
    let unseen_at_opened = behind(server, &sample).await;
    // The mix runs while the timers come due: from the first due until a few seconds past the last.
    let first_due = Duration::from_secs(threshold).saturating_sub(opening.elapsed());
    tokio::time::sleep(first_due).await;
    let unseen_at_first_due = behind(server, &sample).await;
    let opened = opened.len();
    let mix_for = (opened_in.as_secs() + 10).min(600);
    let under = load(server, &with, 8, mix_for).await;
    // Then until every breach is recorded, or long enough to say they were not.
    let waited = Instant::now();
    let (mut late, mut end) = breach_lateness(server, start_of_log).await;
    while late.len() < opened && waited.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (more, new_end) = breach_lateness(server, end).await;
        late.extend(more);
        end = new_end;
    }
    let recorded = late.len();
    let mut late = Latencies(late);
    println!(
        "| timers | opened in s | clocks not started, of {} sampled: once opened / at the first due | mix commands/s while firing | breaches recorded | lateness p50 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n| {opened} | {:.1} | {unseen_at_opened} / {unseen_at_first_due} | {:.0} | {recorded} | {} | {} | {} |",
        sample.len(),
        opened_in.as_secs_f64(),
        under.per_second,
        ms(late.percentile(0.50)),
        ms(late.percentile(0.99)),
        ms(late.percentile(1.0)),
    );
    Ok(())
}
