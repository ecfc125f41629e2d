//! Durable timers, on both stores: a timed snooze reopens its conversation at its time (reason
//! `snooze_expired`, caused by the snooze), also when its time came while no server ran; a later
//! snooze moves the timer and any other status cancels it; `GET /v1/timers` shows what is due.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

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

on_both_stores!(
    a_timed_snooze_reopens_its_conversation_at_its_time,
    a_snooze_due_while_no_server_ran_reopens_when_one_starts,
    a_later_snooze_moves_the_timer_and_another_status_cancels_it,
);
