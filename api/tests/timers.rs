//! Durable timers across real processes, on PostgreSQL with NATS: the HTTP API in one process,
//! `colloquy relay` in another, and two `colloquy project` processes firing the timers (timed
//! snoozes and SLA breaches, due in seconds). A `project` process SIGKILLed just as its timers
//! fall due, and both killed before theirs do, lose none: each snooze wakes its conversation
//! once and each timer breaches once, also when the timers came due while no process ran, and
//! two processes never act on one job twice (claimed rows).
//!
//! It lives in api/ because only this package's tests can run the `colloquy` binary it builds.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/tests/common/mod.rs"]
mod common;
mod worker;

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use colloquy_api::Roles;
use common::{Backend, NatsServer, TestServer};
use worker::Worker;

/// The SLA policy's first response threshold, and how far ahead each batch snoozes.
const DUE_IN: Duration = Duration::from_secs(6);

/// Conversations snoozed, and as many left to breach, per batch.
const EACH: usize = 10;

/// One batch: conversations snoozed until `due`, and conversations whose first response breaches
/// at about `due`.
struct Batch {
    snoozed: Vec<String>,
    timed: Vec<String>,
    due: DateTime<Utc>,
}

impl Batch {
    async fn start(server: &TestServer) -> Self {
        Self::due_in(server, DUE_IN).await
    }

    /// A batch due `due_in` after its conversations are open.
    async fn due_in(server: &TestServer, due_in: Duration) -> Self {
        let mut timed = Vec::new();
        let mut snoozed = Vec::new();
        for _ in 0..EACH {
            timed.push(server.conversation().await);
            snoozed.push(server.conversation().await);
        }
        let due = Utc::now() + due_in;
        let until = due.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        for id in &snoozed {
            let body = json!({"status": "snoozed", "snoozed_until": until});
            let reply = server.post(&format!("/v1/conversations/{id}/status"), body).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        }
        Self { snoozed, timed, due }
    }

    /// The jobs that fire this batch's timers: each snooze's wake-up and each first response's
    /// breach.
    fn jobs(&self) -> Vec<(&'static str, String)> {
        let wakes = self.snoozed.iter().map(|id| ("snooze_timers", format!("default/{id}")));
        let breaches = self.timed.iter().map(|id| ("sla_fire", format!("fire/default/{id}/first_response")));
        wakes.chain(breaches).collect()
    }

    /// How many of this batch's timer jobs are `done` (false: pending), once the projectors
    /// have scheduled them all.
    async fn jobs_in(&self, pool: &PgPool, done: bool) -> usize {
        let mut count = 0;
        for (process, job_id) in self.jobs() {
            let found: Option<bool> =
                sqlx::query_scalar("SELECT done FROM process_jobs WHERE process = $1 AND job_id = $2")
                    .bind(process)
                    .bind(&job_id)
                    .fetch_optional(pool)
                    .await
                    .unwrap();
            count += usize::from(found == Some(done));
        }
        count
    }

    /// Each snoozed conversation's wake-ups and each timed one's breaches, as recorded.
    async fn fired(&self, server: &TestServer) -> (Vec<usize>, Vec<usize>) {
        let mut wakes = Vec::new();
        for id in &self.snoozed {
            let events = server.all_events("conversations", id).await;
            wakes.push(events.iter().filter(|e| e["data"]["reason"] == "snooze_expired").count());
        }
        let mut breaches = Vec::new();
        for id in &self.timed {
            let events = server.all_events("conversations", &format!("{id}/sla")).await;
            let breached = events.iter().filter(|e| {
                e["event_type"] == "SlaTimerBreached" && e["data"]["timer_id"] == "first_response"
            });
            breaches.push(breached.count());
        }
        (wakes, breaches)
    }
}

/// Once every timer of the batch is scheduled (some may have fired already).
async fn scheduled(batch: &Batch, pool: &PgPool) {
    let jobs = batch.jobs().len();
    common::eventually(Duration::from_secs(20), "the batch's timers are scheduled", || async {
        let (pending, done) = (batch.jobs_in(pool, false).await, batch.jobs_in(pool, true).await);
        (pending + done == jobs).then_some(())
    })
    .await;
}

async fn all_fired(batch: &Batch, pool: &PgPool, within: Duration) {
    let jobs = batch.jobs().len();
    common::eventually(within, "every timer of the batch fires", || async {
        (batch.jobs_in(pool, true).await == jobs).then_some(())
    })
    .await;
}

async fn sleep_until(at: DateTime<Utc>) {
    tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timers_fire_once_across_two_project_processes_a_sigkill_and_a_time_with_none_running() {
    let nats = NatsServer::start().await;
    let nats_url = nats.url.clone();
    let server = TestServer::start_roles(
        Backend::Postgres,
        Roles { http: true, relay: false, projectors: false },
        |config| config.nats_url = Some(nats_url.clone()),
    )
    .await;
    let database_url = server.database_url().unwrap().to_owned();
    let pool = PgPool::connect(&database_url).await.unwrap();
    let env = vec![
        ("COLLOQUY_DATABASE_URL".to_owned(), database_url.clone()),
        ("COLLOQUY_NATS_URL".to_owned(), nats.url.clone()),
        ("COLLOQUY_DB_MAX_CONNECTIONS".to_owned(), "4".to_owned()),
        ("COLLOQUY_MASTER_KEY".to_owned(), common::master_key_text().to_owned()),
    ];
    let _relay = Worker::start("relay", env.clone());
    let mut first = Worker::start("project", env.clone());
    let mut second = Worker::start("project", env.clone());
    let threshold = DUE_IN.as_secs();
    let policy =
        json!({"name": "Fast", "targets": [{"metric": "first_response", "threshold_seconds": threshold}]});
    let reply = server.post("/v1/sla-policies", policy).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let policy_id = reply.body["id"].as_str().unwrap().to_owned();

    // Both processes run; one is killed as the batch falls due and comes back a moment later.
    let batch = Batch::start(&server).await;
    scheduled(&batch, &pool).await;
    sleep_until(batch.due + chrono::Duration::milliseconds(50)).await;
    first.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.spawn();
    // A job the killed process had claimed waits for its claim to run out (10 s).
    all_fired(&batch, &pool, Duration::from_secs(30)).await;
    let (wakes, breaches) = batch.fired(&server).await;
    assert_eq!((wakes, breaches), (vec![1; EACH], vec![1; EACH]), "each timer fires once");

    // Both are killed before the next batch falls due: nothing fires until one starts again,
    // and then each timer fires once, acted on by one process (each job tried once). Twice the
    // time to fall due (the policy's next version too), so that scheduling on a loaded machine
    // (the whole suite at once) ends before it does.
    let slower = json!({"name": "Fast", "targets": [{"metric": "first_response", "threshold_seconds": 2 * threshold}]});
    let reply =
        server.call(reqwest::Method::PUT, &format!("/v1/sla-policies/{policy_id}"), Some(slower)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let batch = Batch::due_in(&server, 2 * DUE_IN).await;
    scheduled(&batch, &pool).await;
    first.kill();
    second.kill();
    assert!(Utc::now() < batch.due, "the processes are killed before the batch falls due");
    sleep_until(batch.due + chrono::Duration::seconds(2)).await;
    assert_eq!(batch.jobs_in(&pool, false).await, batch.jobs().len(), "nothing fires while no process runs");
    let (wakes, breaches) = batch.fired(&server).await;
    assert_eq!((wakes, breaches), (vec![0; EACH], vec![0; EACH]));
    first.spawn();
    second.spawn();
    all_fired(&batch, &pool, Duration::from_secs(20)).await;
    let (wakes, breaches) = batch.fired(&server).await;
    assert_eq!((wakes, breaches), (vec![1; EACH], vec![1; EACH]), "each timer fires once");
    for (process, job_id) in batch.jobs() {
        let attempts: i32 =
            sqlx::query_scalar("SELECT attempts FROM process_jobs WHERE process = $1 AND job_id = $2")
                .bind(process)
                .bind(&job_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        // One act counts one attempt; none is counted when the act's mark skipped the row while
        // the projection batch that records the act's own event held it (that batch marks the
        // job done itself, as a cancelled timer: processes.rs, `settle`). Two acts count two.
        assert!(attempts <= 1, "{process} {job_id} was acted on by one process, once: {attempts} attempts");
    }
    // The breaches are dated at their computed due, not when a process came back to fire them.
    for id in &batch.timed {
        let events = server.all_events("conversations", &format!("{id}/sla")).await;
        let breach = events.iter().find(|e| e["event_type"] == "SlaTimerBreached").unwrap();
        let at: DateTime<Utc> = breach["data"]["at"].as_str().unwrap().parse().unwrap();
        assert!(at <= batch.due + chrono::Duration::seconds(1), "breached at {at}, due about {}", batch.due);
    }

    pool.close().await;
    drop((first, second));
    server.stop().await;
}
