//! Durable timers, on both stores: a timed snooze reopens its conversation at its time (reason
//! `snooze_expired`, caused by the snooze), also when its time came while no server ran; a later
//! snooze moves the timer and any other status cancels it; `GET /v1/timers` shows what is due.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use colloquy_projections::deadlines::Deadlines;
use colloquy_projections::processes::{ActError, Job, Pace, Process};

use crate::common::{self, Backend, TestServer};

async fn snooze(server: &TestServer, id: &str, until: DateTime<Utc>) -> i64 {
    let until = until.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let reply = server
        .post(&format!("/v1/conversations/{id}/status"), json!({"status": "snoozed", "snoozed_until": until}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.headers["colloquy-position"].to_str().unwrap().parse().unwrap()
}

async fn timers(server: &TestServer, id: &str) -> Vec<Value> {
    let reply = server.get(&format!("/v1/timers?conversation_id={id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["data"].as_array().unwrap().clone()
}

/// The conversation's status, once it is `status` (within `timeout`).
async fn reaches(server: &TestServer, id: &str, status: &str, timeout: Duration) {
    common::eventually(timeout, &format!("conversation {id} is {status}"), || async {
        let reply = server.get(&format!("/v1/conversations/{id}")).await;
        (reply.body["status"] == status).then_some(())
    })
    .await;
}

fn instant(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn a_timed_snooze_reopens_its_conversation_at_its_time(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let until = Utc::now() + chrono::Duration::seconds(2);
    let snoozed_at = snooze(&server, &id, until).await;

    // Scheduled, once its projection has seen the snooze.
    let scheduled = common::eventually(Duration::from_secs(5), "the timer is scheduled", || async {
        let found = timers(&server, &id).await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(scheduled.len(), 1, "{scheduled:?}");
    assert_eq!(scheduled[0]["process"], "snooze_timers");
    assert_eq!(scheduled[0]["subject"], format!("conversation/{id}"));
    let due = instant(&scheduled[0]["due_at"]);
    assert!((due - until).num_milliseconds().abs() <= 1, "due {due}, snoozed until {until}");

    reaches(&server, &id, "open", Duration::from_secs(10)).await;
    let events = server.all_events("conversations", &id).await;
    let woke = events.last().unwrap();
    assert_eq!(woke["event_type"], "StatusChanged");
    assert_eq!(woke["data"]["reason"], "snooze_expired");
    assert_eq!(woke["metadata"]["actor_id"], "snooze-timer");
    let snooze_event = events.iter().find(|e| e["position"] == snoozed_at).unwrap();
    assert_eq!(woke["metadata"]["causation_id"], snooze_event["metadata"]["event_id"]);
    assert_eq!(woke["metadata"]["correlation_id"], snooze_event["metadata"]["correlation_id"]);
    let fired = instant(&woke["data"]["changed_at"]);
    assert!(fired >= until, "fired at {fired}, before its time {until}");
    assert!(timers(&server, &id).await.is_empty(), "a timer that fired is no longer pending");
    server.stop().await;
}

async fn a_snooze_due_while_no_server_ran_reopens_when_one_starts(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let until = Utc::now() + chrono::Duration::seconds(1);
    snooze(&server, &id, until).await;
    common::eventually(Duration::from_secs(5), "the timer is scheduled", || async {
        (!timers(&server, &id).await.is_empty()).then_some(())
    })
    .await;
    server.shut_down().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start_again().await;
    reaches(&server, &id, "open", Duration::from_secs(10)).await;
    server.stop().await;
}

async fn a_later_snooze_moves_the_timer_and_another_status_cancels_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    snooze(&server, &id, Utc::now() + chrono::Duration::seconds(2)).await;
    let later = Utc::now() + chrono::Duration::hours(1);
    snooze(&server, &id, later).await;
    let moved = common::eventually(Duration::from_secs(5), "the timer moves", || async {
        let found = timers(&server, &id).await;
        (found.len() == 1 && (instant(&found[0]["due_at"]) - later).num_milliseconds().abs() <= 1)
            .then_some(found)
    })
    .await;
    assert_eq!(moved.len(), 1);
    // Past the first snooze's time, the conversation is still snoozed: that timer was moved.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let shown = server.get(&format!("/v1/conversations/{id}")).await;
    assert_eq!(shown.body["status"], "snoozed", "{:?}", shown.body);

    let reopened = server.post(&format!("/v1/conversations/{id}/status"), json!({"status": "open"})).await;
    assert_eq!(reopened.status, StatusCode::OK, "{:?}", reopened.body);
    common::eventually(Duration::from_secs(5), "the timer is cancelled", || async {
        timers(&server, &id).await.is_empty().then_some(())
    })
    .await;
    server.stop().await;
}

/// A lane of the runner in the lanes test: records each job it is handed, in the order acted,
/// and the most of its acts under way at once.
struct Lane {
    name: &'static str,
    pace: Pace,
    acted: Arc<Mutex<Vec<String>>>,
    under_way: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait::async_trait]
impl Process for Lane {
    fn name(&self) -> &'static str {
        self.name
    }

    fn pace(&self) -> Pace {
        self.pace
    }

    async fn act(&self, job: &Job, _origin: &colloquy_infra::Origin) -> Result<(), ActError> {
        self.acted.lock().unwrap().push(format!("{}/{}", self.name, job.id));
        let now = self.under_way.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.under_way.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The processes of one projection half run as lanes of one runner, each at its own pace: the
/// deadlines lane's forty jobs are all acted on in the first round, all at once as its pace
/// says, though the backlog lane has sixty jobs due before them (an SLA timer's deadline behind
/// a burst of the clocks' observe jobs); behind that full round the backlog lane still takes one
/// wave at its default pace (sixteen at once), so it never starves; every job is acted on once.
async fn each_lane_of_a_runner_keeps_its_own_pace(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let database = match backend {
        Backend::Postgres => Some(common::TestDatabase::create().await),
        Backend::Sqlite => None,
    };
    let location = match &database {
        Some(database) => {
            colloquy_infra::StoreLocation::Postgres { url: database.url.clone(), max_connections: 4 }
        }
        None => colloquy_infra::StoreLocation::Sqlite { path: dir.path().join("colloquy.db") },
    };
    let store = colloquy_projections::open_store(&location).await.unwrap();
    // Long due: the backlog at 1,000 ms past the epoch, the deadlines at 2,000.
    let (backlog, deadlines): (i64, i64) = (60, 40);
    let jobs = (0..backlog)
        .map(|n| ("backlog", format!("b-{n:02}"), 1_000, n))
        .chain((0..deadlines).map(|n| ("deadlines", format!("d-{n:02}"), 2_000, backlog + n)));
    for (process, id, due_at, position) in jobs {
        let sql = "INSERT INTO process_jobs (process, job_id, tenant_id, position, due_at, job)
                   VALUES ($1, $2, 'default', $3, $4, '{}')";
        colloquy_infra::on_pool!(store, |pool| {
            sqlx::query(sql).bind(process).bind(&id).bind(position).bind(due_at).execute(pool).await.unwrap();
        });
    }

    let acted = Arc::new(Mutex::new(Vec::new()));
    let lane = |name, pace| {
        let (under_way, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        Arc::new(Lane { name, pace, acted: acted.clone(), under_way, most })
    };
    let (fast, slow) = (
        lane("deadlines", Pace { jobs_per_round: 40, at_once: 40, deadlines: true }),
        lane("backlog", Pace::DEFAULT),
    );
    let lanes = vec![fast.clone() as Arc<dyn Process>, slow.clone() as Arc<dyn Process>];
    let (_recorded, recorded_rx) = tokio::sync::watch::channel(0);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let late = Deadlines::default();
    let started = Utc::now();
    let runner = tokio::spawn(colloquy_projections::processes::run(
        store.clone(),
        lanes,
        recorded_rx,
        stop_rx,
        late.clone(),
    ));
    common::eventually(Duration::from_secs(10), "every job is acted on", || async {
        (acted.lock().unwrap().len() as i64 >= backlog + deadlines).then_some(())
    })
    .await;
    stop.send(true).unwrap();
    runner.await.unwrap().unwrap();

    let acted = acted.lock().unwrap().clone();
    // The first round: the deadlines' forty and one wave of the backlog's.
    let wave = Pace::DEFAULT.at_once;
    let first_round: Vec<&String> = acted.iter().take(40 + wave).collect();
    for n in 0..deadlines {
        assert!(
            first_round.contains(&&format!("deadlines/d-{n:02}")),
            "d-{n:02} in the first round: {acted:?}"
        );
    }
    let backlog_first = first_round.iter().filter(|id| id.starts_with("backlog/")).count();
    assert_eq!(backlog_first, wave, "one wave of the backlog in the first round: {acted:?}");
    assert_eq!(fast.most.load(Ordering::SeqCst), 40, "the deadlines all at once");
    assert_eq!(slow.most.load(Ordering::SeqCst), wave, "the backlog at the default pace");
    // The deadlines were due long ago: their round holds background projections back.
    assert!(late.holding(started + chrono::Duration::seconds(1)), "a late round of deadlines is noted");
    let mut each = acted.clone();
    each.sort();
    each.dedup();
    assert_eq!(each.len(), acted.len(), "each job acted on once: {acted:?}");
    store.close().await;
}

on_both_stores!(
    a_timed_snooze_reopens_its_conversation_at_its_time,
    a_snooze_due_while_no_server_ran_reopens_when_one_starts,
    a_later_snooze_moves_the_timer_and_another_status_cancels_it,
    each_lane_of_a_runner_keeps_its_own_pace,
);
