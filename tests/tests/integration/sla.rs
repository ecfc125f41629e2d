//! SLA policies, business calendars and the clocks, on both stores, with the real clock and
//! thresholds of seconds: a policy times a new conversation; its warning and breach are recorded
//! live at their computed times, caused by the timer's start; a breach due while no server ran is
//! recorded when one starts; a reply before the due fulfils the timer and nothing breaches;
//! calendars and policies are versioned resources with ETags, and holidays import from iCalendar.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{self, Backend, TestServer};

fn instant(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap_or_else(|| panic!("not an instant: {value}")).parse().unwrap()
}

async fn create_policy(server: &TestServer, targets: Value) -> String {
    let reply = server.post("/v1/sla-policies", json!({"name": "Fast", "targets": targets})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// The conversation's SLA clocks, once `ready` holds of them.
async fn clocks_when(server: &TestServer, id: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    common::eventually(Duration::from_secs(15), what, || async {
        let reply = server.get(&format!("/v1/conversations/{id}/sla")).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        ready(&reply.body).then_some(reply.body)
    })
    .await
}

fn timer<'a>(clocks: &'a Value, timer_id: &str) -> &'a Value {
    let timers = clocks["timers"].as_array().unwrap();
    timers.iter().find(|t| t["timer_id"] == timer_id).unwrap_or_else(|| panic!("no {timer_id} in {clocks}"))
}

async fn sla_events(server: &TestServer, id: &str) -> Vec<Value> {
    server.all_events("conversations", &format!("{id}/sla")).await
}

async fn reply_as_agent(server: &TestServer, id: &str) {
    let body = json!({"sender": {"kind": "user", "id": "ada"}, "text": "On it"});
    let reply = server.post(&format!("/v1/conversations/{id}/messages"), body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

async fn a_policy_times_a_conversation_and_its_warning_and_breach_are_recorded_live(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_policy(
        &server,
        json!([{"metric": "first_response", "threshold_seconds": 2, "warnings": [{"percent": 50}]}]),
    )
    .await;
    let id = server.conversation().await;

    let clocks = clocks_when(&server, &id, "the first response timer runs", |c| {
        c["timers"].as_array().is_some_and(|t| !t.is_empty())
    })
    .await;
    assert_eq!(clocks["policy"]["name"], "Fast");
    let first = timer(&clocks, "first_response");
    let due = instant(&first["due_at"]);
    assert_eq!((due - instant(&first["started_at"])).num_seconds(), 2);
    assert_eq!(clocks["next_due_timer"], "first_response");

    let clocks =
        clocks_when(&server, &id, "the timer breaches", |c| timer(c, "first_response")["breached"] == true)
            .await;
    assert_eq!(timer(&clocks, "first_response")["warnings_given"], json!([0]));
    let events = sla_events(&server, &id).await;
    let started = events.iter().find(|e| e["event_type"] == "SlaTimerStarted").unwrap();
    let warned = events.iter().find(|e| e["event_type"] == "SlaTimerWarned").unwrap();
    let breached = events.iter().find(|e| e["event_type"] == "SlaTimerBreached").unwrap();
    assert_eq!(instant(&breached["data"]["at"]), due, "a breach is recorded at its computed due time");
    assert_eq!(
        (instant(&warned["data"]["at"]) - instant(&first["started_at"])).num_seconds(),
        1,
        "50% of 2 s"
    );
    let noticed = instant(&breached["metadata"]["recorded_at"]);
    assert!(noticed >= due, "recorded at {noticed}, before its due {due}");
    assert_eq!(breached["metadata"]["actor_id"], "sla-clock");
    assert_eq!(breached["metadata"]["causation_id"], started["metadata"]["event_id"]);

    // The late reply fulfils it with its overrun.
    reply_as_agent(&server, &id).await;
    let clocks = clocks_when(&server, &id, "the timer is fulfilled", |c| {
        timer(c, "first_response")["state"] == "fulfilled"
    })
    .await;
    let first = timer(&clocks, "first_response");
    assert!(first["remaining_seconds"].as_i64().unwrap() < 0, "{first}");
    let fulfilled =
        sla_events(&server, &id).await.into_iter().find(|e| e["event_type"] == "SlaTimerFulfilled").unwrap();
    assert_eq!(fulfilled["data"]["breached"], true);
    assert!(fulfilled["data"]["overrun_seconds"].as_i64().unwrap() >= 0);
    server.stop().await;
}

async fn a_reply_before_the_due_fulfils_the_timer_and_nothing_breaches(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_policy(&server, json!([{"metric": "first_response", "threshold_seconds": 3}])).await;
    let id = server.conversation().await;
    clocks_when(&server, &id, "the timer runs", |c| c["timers"].as_array().is_some_and(|t| !t.is_empty()))
        .await;
    reply_as_agent(&server, &id).await;
    let clocks = clocks_when(&server, &id, "the timer is fulfilled", |c| {
        timer(c, "first_response")["state"] == "fulfilled"
    })
    .await;
    assert!(timer(&clocks, "first_response")["remaining_seconds"].as_i64().unwrap() > 0);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let events = sla_events(&server, &id).await;
    assert!(events.iter().all(|e| e["event_type"] != "SlaTimerBreached"), "{events:#?}");
    server.stop().await;
}

/// A busy conversation's events reach its clocks at most once a second: a customer's message
/// 1.3 s after the conversation opened reaches them at once, and an agent's reply 0.3 s after it
/// (in another projector batch) a second after the message, after the first response's due
/// (2 s). The timer service feeds the clocks
/// what they have not seen before it fires, so the reply fulfils the timer and nothing breaches.
async fn a_reply_the_clocks_have_not_seen_when_the_due_comes_still_fulfils_the_timer(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_policy(&server, json!([{"metric": "first_response", "threshold_seconds": 2}])).await;
    let id = server.conversation().await;
    let clocks = clocks_when(&server, &id, "the timer runs", |c| {
        c["timers"].as_array().is_some_and(|t| !t.is_empty())
    })
    .await;
    let first = timer(&clocks, "first_response");
    let (started, due) = (instant(&first["started_at"]), instant(&first["due_at"]));
    let wait = (started + chrono::Duration::milliseconds(1300) - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let body = json!({"sender": {"kind": "customer"}, "text": "Anyone there?"});
    let asked = server.post(&format!("/v1/conversations/{id}/messages"), body).await;
    assert_eq!(asked.status, StatusCode::CREATED, "{:?}", asked.body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    reply_as_agent(&server, &id).await;

    let clocks = clocks_when(&server, &id, "the timer is fulfilled", |c| {
        timer(c, "first_response")["state"] == "fulfilled"
    })
    .await;
    let events = server.all_events("conversations", &id).await;
    let recorded = |sender: &str| {
        let message = events
            .iter()
            .find(|e| e["event_type"] == "MessageAdded" && e["data"]["sender"]["kind"] == sender);
        instant(&message.unwrap_or_else(|| panic!("no message by a {sender}"))["metadata"]["recorded_at"])
    };
    let (asked_at, replied_at) = (recorded("customer"), recorded("user"));
    assert!(
        asked_at > started + chrono::Duration::seconds(1)
            && replied_at > asked_at + chrono::Duration::milliseconds(200)
            && replied_at < due,
        "the messages ({asked_at}, {replied_at}) missed their window before the due ({due}): the test could not tell"
    );
    assert!(timer(&clocks, "first_response")["remaining_seconds"].as_i64().unwrap() >= 0, "{clocks}");
    let events = sla_events(&server, &id).await;
    assert!(events.iter().all(|e| e["event_type"] != "SlaTimerBreached"), "{events:#?}");
    let fulfilled = events.iter().find(|e| e["event_type"] == "SlaTimerFulfilled").unwrap();
    assert_eq!(fulfilled["data"]["breached"], false, "{fulfilled}");
    server.stop().await;
}

async fn a_breach_due_while_no_server_ran_is_recorded_at_its_due_when_one_starts(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    create_policy(&server, json!([{"metric": "first_response", "threshold_seconds": 1}])).await;
    let id = server.conversation().await;
    let clocks = clocks_when(&server, &id, "the timer runs", |c| {
        c["timers"].as_array().is_some_and(|t| !t.is_empty())
    })
    .await;
    let due = instant(&timer(&clocks, "first_response")["due_at"]);
    server.shut_down().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start_again().await;
    clocks_when(&server, &id, "the timer breaches", |c| timer(c, "first_response")["breached"] == true).await;
    let events = sla_events(&server, &id).await;
    let breached = events.iter().find(|e| e["event_type"] == "SlaTimerBreached").unwrap();
    assert_eq!(instant(&breached["data"]["at"]), due);
    server.stop().await;
}

/// The clocks keep each tenant's policies between acts: a policy edited after one conversation's
/// clocks read it times the conversations opened after the edit by its new version, and the
/// first keeps the version it started under.
async fn an_edited_policy_times_the_conversations_opened_after_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let policy = |threshold: i64| json!({"name": "Fast", "targets": [{"metric": "first_response", "threshold_seconds": threshold}]});
    let created = server.post("/v1/sla-policies", policy(3600)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let path = format!("/v1/sla-policies/{}", created.body["id"].as_str().unwrap());
    let runs = |c: &Value| c["timers"].as_array().is_some_and(|t| !t.is_empty());
    let threshold = |clocks: &Value| {
        let first = timer(clocks, "first_response");
        (instant(&first["due_at"]) - instant(&first["started_at"])).num_seconds()
    };

    let first = server.conversation().await;
    let clocks = clocks_when(&server, &first, "the first conversation is timed", runs).await;
    assert_eq!((clocks["policy"]["version"].as_i64(), threshold(&clocks)), (Some(1), 3600));

    let edited =
        server.call_with(Method::PUT, &path, Some(policy(1800)), &[("if-match", &created.etag())]).await;
    assert_eq!(edited.status, StatusCode::OK, "{:?}", edited.body);
    assert_eq!(edited.body["version"], 2);
    let second = server.conversation().await;
    let clocks = clocks_when(&server, &second, "the second conversation is timed", runs).await;
    assert_eq!((clocks["policy"]["version"].as_i64(), threshold(&clocks)), (Some(2), 1800));

    let clocks = server.get(&format!("/v1/conversations/{first}/sla")).await.body;
    assert_eq!((clocks["policy"]["version"].as_i64(), threshold(&clocks)), (Some(1), 3600));
    server.stop().await;
}

async fn calendars_and_policies_are_versioned_resources_with_etags(backend: Backend) {
    let server = TestServer::start(backend).await;
    let calendar = json!({"name": "Berlin", "time_zone": "Europe/Berlin",
        "weekly": [{"weekday": "Mon", "start": "09:00", "end": "17:00"}], "inbox_ids": ["support"]});
    let created = server.post("/v1/calendars", calendar.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["version"], 1);
    let path = format!("/v1/calendars/{id}");

    let mut edited = calendar.clone();
    edited["weekly"] = json!([{"weekday": "Mon", "start": "08:00", "end": "16:00"}]);
    let stale = server.call_with(Method::PUT, &path, Some(edited.clone()), &[("if-match", "\"7\"")]).await;
    stale.assert_problem(StatusCode::PRECONDITION_FAILED);
    let current = created.etag();
    let replaced = server.call_with(Method::PUT, &path, Some(edited), &[("if-match", &current)]).await;
    assert_eq!(replaced.status, StatusCode::OK, "{:?}", replaced.body);
    assert_eq!(replaced.body["version"], 2);
    assert_eq!(replaced.body["definition"]["weekly"][0]["start"], "08:00");

    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:xmas\r\nDTSTART;VALUE=DATE:20261225\r\nDTEND;VALUE=DATE:20261227\r\nSUMMARY:Christmas\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:party\r\nDTSTART:20261218T180000Z\r\nSUMMARY:Party\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let imported = server.post(&format!("{path}/holidays"), json!({"ics": ics})).await;
    assert_eq!(imported.status, StatusCode::OK, "{:?}", imported.body);
    assert_eq!(imported.body["calendar"]["version"], 3);
    let dates: Vec<&str> =
        imported.body["imported"].as_array().unwrap().iter().map(|e| e["date"].as_str().unwrap()).collect();
    assert_eq!(dates, ["2026-12-25", "2026-12-26"]);
    assert_eq!(imported.body["skipped"][0]["uid"], "party", "a timed event closes nothing");
    let bad_ics = server.post(&format!("{path}/holidays"), json!({"ics": "not a calendar"})).await;
    bad_ics.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);

    let versions = server.get(&format!("{path}/versions")).await;
    let numbers: Vec<i64> =
        versions.body["data"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(
        versions.body["data"][0]["definition"]["weekly"][0]["start"], "09:00",
        "old versions stay as they were"
    );
    let listed = common::eventually(Duration::from_secs(5), "the listing shows version 3", || async {
        let listed = server.get("/v1/calendars").await;
        (listed.body["data"][0]["version"] == 3).then_some(listed)
    })
    .await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);

    let unknown_zone = server
        .post("/v1/calendars", json!({"name": "Mars", "time_zone": "Mars/Olympus", "weekly": []}))
        .await;
    // A zone that is no IANA name does not fit the body's type, as any unknown value does.
    unknown_zone.assert_problem(StatusCode::BAD_REQUEST);
    let overlapping = server
        .post("/v1/calendars", json!({"name": "Twice", "time_zone": "UTC", "weekly": [
            {"weekday": "Tue", "start": "09:00", "end": "12:00"}, {"weekday": "Tue", "start": "11:00", "end": "13:00"}]}))
        .await;
    overlapping.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);

    let no_threshold = server
        .post(
            "/v1/sla-policies",
            json!({"name": "Zero", "targets": [{"metric": "first_response", "threshold_seconds": 0}]}),
        )
        .await;
    let detail = no_threshold.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("threshold_seconds"), "{detail}");

    let deleted = server.call_with(Method::DELETE, &path, None, &[("if-match", &imported.etag())]).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    server.get(&path).await.assert_problem(StatusCode::NOT_FOUND);
    assert_eq!(
        server.get(&format!("{path}/versions")).await.status,
        StatusCode::OK,
        "its versions stay readable"
    );
    server.stop().await;
}

async fn a_draft_policy_replayed_over_past_conversations_reports_hits_and_misses_and_writes_nothing(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let from = Utc::now() - chrono::Duration::seconds(1);
    let answered = server.conversation().await;
    reply_as_agent(&server, &answered).await;
    let waiting = server.conversation().await;
    // Past its due: a second from the next whole second after it opened.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let to = Utc::now();
    let head = server.get("/v1/events?after=0&limit=1000").await.body["data"].as_array().unwrap().len();
    let draft = json!({"policy": {"name": "Draft", "targets": [{"metric": "first_response", "threshold_seconds": 1}]},
                       "from": from, "to": to});
    let result = common::eventually(Duration::from_secs(5), "both conversations are replayed", || async {
        let reply = server.post("/v1/sla-policies/what-if", draft.clone()).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        (reply.body["conversations"] == 2).then_some(reply.body)
    })
    .await;
    assert_eq!(result["covered"], 2);
    assert_eq!(
        result["by_metric"]["first_response"],
        json!({"hits": 1, "misses": 1, "running": 0, "other": 0})
    );
    let of = |id: &str| {
        result["results"].as_array().unwrap().iter().find(|r| r["conversation_id"] == id).unwrap().clone()
    };
    assert_eq!(of(&answered)["timers"][0]["state"], "fulfilled");
    assert!(of(&waiting)["timers"][0]["breached_at"].is_string(), "{result}");
    let after = server.get("/v1/events?after=0&limit=1000").await.body["data"].as_array().unwrap().len();
    assert_eq!(after, head, "a what-if writes nothing");

    let both = server
        .post(
            "/v1/sla-policies/what-if",
            json!({"policy": draft["policy"], "policy_id": uuid::Uuid::now_v7(), "from": from, "to": to}),
        )
        .await;
    both.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let backwards = server
        .post("/v1/sla-policies/what-if", json!({"policy": draft["policy"], "from": to, "to": from}))
        .await;
    backwards.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    server.stop().await;
}

/// The ids the inbox lists for `query`, in order, walking every page.
async fn listed(server: &TestServer, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let reply = server.get(&format!("/v1/conversations?{query}&limit=1&cursor={cursor}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {:?}", reply.body);
        ids.extend(
            reply.body["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return ids,
        }
    }
}

/// The inbox row of conversation `id`.
async fn row(server: &TestServer, id: &str) -> Value {
    let rows = server.get("/v1/conversations?limit=100").await.body["data"].as_array().unwrap().clone();
    rows.into_iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("{id} is not listed"))
}

async fn the_inbox_shows_filters_and_sorts_by_each_conversations_sla(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_policy(
        &server,
        json!([{"metric": "first_response", "threshold_seconds": 4, "warnings": [{"before_seconds": 2}]}]),
    )
    .await;
    let (soonest, paused, answered) =
        (server.conversation().await, server.conversation().await, server.conversation().await);
    let later = server.conversation().await;
    reply_as_agent(&server, &answered).await;
    let pending =
        server.post(&format!("/v1/conversations/{paused}/status"), json!({"status": "pending"})).await;
    assert_eq!(pending.status, StatusCode::OK, "{:?}", pending.body);

    let sorted = common::eventually(Duration::from_secs(10), "the inbox shows the clocks", || async {
        let sorted = listed(&server, "sort=sla_due_at").await;
        let paused_listed = listed(&server, "sla_status=paused").await;
        (sorted.len() == 2 && paused_listed == [paused.clone()]).then_some(sorted)
    })
    .await;
    assert_eq!(
        sorted,
        [soonest.clone(), later.clone()],
        "the soonest due first; paused and answered ones not at all"
    );
    assert_eq!(listed(&server, "sort=sla_due_at&order=desc").await, [later.clone(), soonest.clone()]);
    let mut active = listed(&server, "sla_status=active").await;
    active.sort();
    let mut expected = vec![soonest.clone(), later.clone()];
    expected.sort();
    assert_eq!(active, expected);
    let first = row(&server, &soonest).await;
    assert_eq!(first["sla"]["state"], "active");
    let clocks = server.get(&format!("/v1/conversations/{soonest}/sla")).await.body;
    assert_eq!(first["sla"]["next_due_at"], timer(&clocks, "first_response")["due_at"]);
    assert_eq!(row(&server, &paused).await["sla"], json!({"state": "paused", "next_due_at": null}));
    assert!(row(&server, &answered).await.get("sla").is_none(), "no live timer, no SLA on the row");

    common::eventually(Duration::from_secs(15), "both running timers breach", || async {
        let breached = listed(&server, "sla_status=breached").await;
        (breached.len() == 2).then_some(())
    })
    .await;
    assert_eq!(row(&server, &soonest).await["sla"]["state"], "breached");
    // Breached, still first by due: the most overdue first.
    assert_eq!(
        listed(&server, "sort=sla_due_at&sla_status=breached,warning").await,
        [soonest.clone(), later]
    );
    assert_eq!(listed(&server, "sla_status=paused").await, [paused]);

    let bad = server.get("/v1/conversations?sla_status=missed").await;
    assert!(bad.assert_problem(StatusCode::BAD_REQUEST).contains("sla_status"), "{:?}", bad.body);
    server.stop().await;
}

async fn a_recompute_records_a_versions_results_beside_the_live_timers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let policy_id =
        create_policy(&server, json!([{"metric": "first_response", "threshold_seconds": 60}])).await;
    let from = Utc::now() - chrono::Duration::seconds(1);
    let id = server.conversation().await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    reply_as_agent(&server, &id).await;
    clocks_when(&server, &id, "the reply fulfils the live timer", |c| {
        c["timers"].as_array().is_some_and(|t| t.first().is_some_and(|t| t["state"] == "fulfilled"))
    })
    .await;
    // Version 2: a threshold of one second, which that reply missed.
    let path = format!("/v1/sla-policies/{policy_id}");
    let current = server.get(&path).await;
    let stricter = json!({"name": "Fast", "targets": [{"metric": "first_response", "threshold_seconds": 1}]});
    let revised =
        server.call_with(Method::PUT, &path, Some(stricter), &[("if-match", &current.etag())]).await;
    assert_eq!(revised.status, StatusCode::OK, "{:?}", revised.body);
    let to = Utc::now() + chrono::Duration::seconds(1);
    let range = |version: u32| json!({"version": version, "from": from, "to": to});

    let recomputed = server.post(&format!("{path}/recompute"), range(2)).await;
    assert_eq!(recomputed.status, StatusCode::OK, "{:?}", recomputed.body);
    let body = &recomputed.body;
    assert_eq!(
        (body["version"].as_u64(), body["covered"].as_u64(), body["recorded"].as_u64()),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(body["by_metric"]["first_response"]["misses"], 1, "{body}");
    let clocks = server.get(&format!("/v1/conversations/{id}/sla")).await.body;
    let live = timer(&clocks, "first_response");
    assert_eq!(
        (live["state"].as_str(), live["breached"].as_bool(), live["policy_version"].as_u64()),
        (Some("fulfilled"), Some(false), Some(1)),
        "the live timer keeps its terms"
    );
    let results = clocks["recomputed"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{clocks}");
    assert_eq!(results[0]["policy_version"], 2);
    assert_eq!(results[0]["timers"][0]["breached"], true, "{clocks}");
    assert_eq!(results[0]["timers"][0]["policy_version"], 2);

    // The same results again record nothing; version 1's sit beside version 2's.
    let again = server.post(&format!("{path}/recompute"), range(2)).await;
    assert_eq!(again.body["recorded"], 0, "{:?}", again.body);
    let first = server.post(&format!("{path}/recompute"), range(1)).await;
    assert_eq!(first.body["recorded"], 1, "{:?}", first.body);
    let clocks = server.get(&format!("/v1/conversations/{id}/sla")).await.body;
    let versions: Vec<u64> = clocks["recomputed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["policy_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1]);
    assert_eq!(clocks["recomputed"][1]["timers"][0]["breached"], false);
    let recorded: Vec<Value> = sla_events(&server, &id)
        .await
        .into_iter()
        .filter(|e| e["event_type"] == "SlaResultsRecomputed")
        .collect();
    assert_eq!(recorded.len(), 2, "one event per change");

    let unknown =
        server.post(&format!("/v1/sla-policies/{}/recompute", uuid::Uuid::now_v7()), range(1)).await;
    unknown.assert_problem(StatusCode::NOT_FOUND);
    server.post(&format!("{path}/recompute"), range(9)).await.assert_problem(StatusCode::NOT_FOUND);
    let backwards = server.post(&format!("{path}/recompute"), json!({"from": to, "to": from})).await;
    backwards.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    server.stop().await;
}

on_both_stores!(
    a_recompute_records_a_versions_results_beside_the_live_timers,
    the_inbox_shows_filters_and_sorts_by_each_conversations_sla,
    a_draft_policy_replayed_over_past_conversations_reports_hits_and_misses_and_writes_nothing,
    a_policy_times_a_conversation_and_its_warning_and_breach_are_recorded_live,
    a_reply_before_the_due_fulfils_the_timer_and_nothing_breaches,
    a_reply_the_clocks_have_not_seen_when_the_due_comes_still_fulfils_the_timer,
    a_breach_due_while_no_server_ran_is_recorded_at_its_due_when_one_starts,
    calendars_and_policies_are_versioned_resources_with_etags,
    an_edited_policy_times_the_conversations_opened_after_it,
);
