//! Webhooks over real HTTP on both stores: a receiver of the test's own (on loopback, which the
//! tests' configuration allows) gets every event of the tenant after the subscription, signed
//! (checked by the Standard Webhooks reference library), in order per aggregate, and nothing
//! lost while it fails and recovers, while it is paused and resumed, or replayed.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::receiver::Receiver;
use crate::common::{eventually, Backend, TestServer};

/// An admin token of tenant `other`.
async fn other_tenant(server: &TestServer) -> String {
    let store = server.config().open_store(&[]).await.unwrap();
    let other = colloquy_domain::TenantId::parse("other").unwrap();
    let issued = colloquy_infra::tokens::create_token(
        &store,
        &other,
        "other",
        &["admin".to_owned()],
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    store.close().await;
    issued.secret
}

/// Creates a subscription to `url` with `extra` fields: its id and secret.
async fn subscribe(server: &TestServer, url: &str, extra: Value) -> (String, String) {
    let mut body = json!({"name": "receiver", "url": url});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let reply = server.post("/v1/webhooks", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let secret = reply.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (reply.body["id"].as_str().unwrap().to_owned(), secret)
}

/// The tenant's events after `after`, from the global log.
async fn logged_after(server: &TestServer, after: i64) -> Vec<Value> {
    let (mut events, mut after) = (Vec::new(), after);
    loop {
        let reply = server.get(&format!("/v1/events?after={after}&limit=500")).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let page = reply.body["data"].as_array().unwrap().clone();
        if page.is_empty() {
            return events;
        }
        after = page.last().unwrap()["position"].as_i64().unwrap();
        events.extend(page);
    }
}

/// Some traffic over `count` conversations, interleaved: each opened (with its contact), then
/// messages, labels and a resolve, round by round.
async fn traffic(server: &TestServer, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(server.conversation().await);
    }
    for round in 0..3 {
        for id in &ids {
            server.customer_message(id, &format!("message {round}")).await;
        }
    }
    for id in &ids {
        let reply = server.post(&format!("/v1/conversations/{id}/labels"), json!({"add": ["billing"]})).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let reply = server.post(&format!("/v1/conversations/{id}/status"), json!({"status": "closed"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    ids
}

/// Asserts that `received` (distinct, in arrival order) holds exactly `logged` (the log's events),
/// and that each aggregate's events came in their order.
fn assert_complete_and_ordered(received: &[Value], logged: &[Value]) {
    let ids = |events: &[Value], key: &dyn Fn(&Value) -> String| {
        let mut ids: Vec<String> = events.iter().map(key).collect();
        ids.sort();
        ids
    };
    let received_ids = ids(received, &|e| e["id"].as_str().unwrap().to_owned());
    let logged_ids = ids(logged, &|e| e["metadata"]["event_id"].as_str().unwrap().to_owned());
    assert_eq!(received_ids.len(), logged_ids.len(), "as many events as the log holds");
    assert_eq!(received_ids, logged_ids, "the very events of the log");
    let mut last: HashMap<String, i64> = HashMap::new();
    for event in received {
        let subject = event["subject"].as_str().unwrap().to_owned();
        let sequence = event["sequence"].as_i64().unwrap();
        let before = last.insert(subject.clone(), sequence).unwrap_or(0);
        assert_eq!(sequence, before + 1, "{subject}: event {sequence} came after {before}");
    }
}

async fn delivers_every_event_signed_in_order_through_failures(backend: Backend) {
    let server = TestServer::start(backend).await;
    let receiver = Receiver::start().await;
    // Its first three requests fail: each is retried, with the same webhook-id.
    receiver.fail_next(3);
    let (id, secret) = subscribe(&server, &receiver.url, json!({})).await;
    let created = server.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    // Another tenant's activity, interleaved, is not this subscription's; nor is the subscription
    // that tenant's.
    let other = other_tenant(&server).await;
    let client = reqwest::Client::new();
    let foreign =
        client.get(server.url(&format!("/v1/webhooks/{id}"))).bearer_auth(&other).send().await.unwrap();
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    for _ in 0..3 {
        let made = client
            .post(server.url("/v1/contacts"))
            .bearer_auth(&other)
            .json(&json!({"first_name": "Other"}))
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), StatusCode::CREATED);
    }
    let ids = traffic(&server, 3).await;
    client
        .post(server.url("/v1/contacts"))
        .bearer_auth(&other)
        .json(&json!({"first_name": "Late"}))
        .send()
        .await
        .unwrap();
    let logged = eventually(Duration::from_secs(5), "the subscription's creation projected", || async {
        let reply = server.get(&format!("/v1/webhooks/{id}")).await;
        reply.body["delivery"]["position"].as_i64()
    })
    .await;
    let logged = logged_after(&server, logged).await;
    assert_eq!(logged.len(), 3 * (2 + 3 + 2), "contact and conversation, 3 messages, labels, resolve");
    eventually(Duration::from_secs(20), "every event delivered", || async {
        (receiver.distinct().len() >= logged.len()).then_some(())
    })
    .await;
    assert_complete_and_ordered(&receiver.distinct(), &logged);

    let requests = receiver.requests();
    let failed: Vec<_> = requests.iter().filter(|r| r.answered >= 500).collect();
    assert_eq!(failed.len(), 3);
    // Retried with the same id, and then taken.
    let first_failed = &failed[0].headers["webhook-id"];
    assert!(requests.iter().any(|r| r.answered == 200 && &r.headers["webhook-id"] == first_failed));
    for request in &requests {
        assert_eq!(request.headers["content-type"], "application/cloudevents+json");
        let event: Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(request.headers["webhook-id"], event["id"], "webhook-id is the event's id");
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["tenant"], "default");
    }
    // Every request's signature verifies with the reference library.
    assert_eq!(receiver.verify_with_reference(&secret), requests.len());

    // The delivery log: the failed attempts and the deliveries, newest first, paged.
    let log = server.get(&format!("/v1/webhooks/{id}/deliveries?limit=100")).await;
    assert_eq!(log.status, StatusCode::OK, "{:?}", log.body);
    let attempts = log.body["data"].as_array().unwrap();
    assert_eq!(attempts.len(), requests.len());
    let failures: Vec<_> = attempts.iter().filter(|a| a["outcome"] == "failed").collect();
    assert_eq!(failures.len(), 3);
    assert!(failures.iter().all(|a| a["status_code"] == 500 && a["response_excerpt"] == "not now"));
    assert_eq!(failures.iter().map(|a| a["attempt"].as_i64().unwrap()).max(), Some(3));
    let page = server.get(&format!("/v1/webhooks/{id}/deliveries?limit=2")).await;
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let next = server.get(&format!("/v1/webhooks/{id}/deliveries?limit=2&cursor={cursor}")).await;
    assert_eq!(next.body["data"][0]["id"], attempts[2]["id"]);
    let state = server.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(state.body["delivery"]["status"], "active", "{:?}", state.body);
    assert_eq!(state.body["delivery"]["delivered_events"].as_u64(), Some(logged.len() as u64));
    assert!(state.body.get("secret").is_none(), "the secret is shown once");

    // A replay from the third event sends it and every later one again, in order.
    let from = logged[2]["position"].as_i64().unwrap();
    let before = receiver.taken().len();
    let replay = server.post(&format!("/v1/webhooks/{id}/replay?from_position={from}"), json!({})).await;
    assert_eq!(replay.status, StatusCode::ACCEPTED, "{:?}", replay.body);
    eventually(Duration::from_secs(10), "the replay delivered", || async {
        (receiver.taken().len() >= before + logged.len() - 2).then_some(())
    })
    .await;
    let replayed = &receiver.taken()[before..];
    let expected: Vec<&Value> = logged[2..].iter().map(|e| &e["metadata"]["event_id"]).collect();
    let got: Vec<&Value> = replayed.iter().map(|e| &e["id"]).collect();
    assert_eq!(got, expected);
    drop(ids);
}

async fn a_subscriber_failing_too_long_is_paused_and_resumes_where_it_stopped(backend: Backend) {
    let server = TestServer::start_with(backend, |config| config.webhook_retry_for_secs = 1).await;
    let receiver = Receiver::start().await;
    receiver.set_failing(true);
    let (id, secret) = subscribe(
        &server,
        &receiver.url,
        json!({"event_types": ["MessageAdded"], "content_mode": "batched"}),
    )
    .await;
    let conversation = server.conversation().await;
    for n in 0..5 {
        server.customer_message(&conversation, &format!("m{n}")).await;
    }
    let paused = eventually(Duration::from_secs(15), "the subscription paused", || async {
        let reply = server.get(&format!("/v1/webhooks/{id}")).await;
        (reply.body["delivery"]["status"] == "paused").then_some(reply.body)
    })
    .await;
    let reason = paused["delivery"]["paused_reason"].as_str().unwrap();
    assert!(reason.contains("503"), "{reason}");
    assert!(paused["delivery"]["attempts"].as_i64().unwrap() >= 2, "{paused}");
    let tried = receiver.requests().len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.requests().len(), tried, "a paused subscription is not tried");
    // Operators see it: the subscription paused, and the 503s among the requests (counted by the
    // server's process, which other tests' servers may share: at least this test's).
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"));
        line[name.len() + 1..].parse().unwrap()
    };
    assert_eq!(value("colloquy_webhook_subscriptions{state=\"paused\"}"), 1.0);
    assert_eq!(value("colloquy_webhook_subscriptions{state=\"failing\"}"), 0.0);
    assert!(value("colloquy_webhook_requests_total{outcome=\"5xx\"}") >= 2.0, "{metrics}");

    // Recovered and resumed: the five messages, in one batch, in order; nothing else.
    receiver.set_failing(false);
    let resumed = server.post(&format!("/v1/webhooks/{id}/resume"), json!({})).await;
    assert_eq!(resumed.status, StatusCode::ACCEPTED, "{:?}", resumed.body);
    eventually(Duration::from_secs(10), "the messages delivered", || async {
        (receiver.distinct().len() == 5).then_some(())
    })
    .await;
    let taken = receiver.requests().into_iter().filter(|r| r.answered == 200).collect::<Vec<_>>();
    assert_eq!(taken.len(), 1, "one batch");
    assert_eq!(taken[0].headers["content-type"], "application/cloudevents-batch+json");
    let texts: Vec<_> =
        taken[0].events().iter().map(|e| e["data"]["content"]["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    assert!(receiver.distinct().iter().all(|e| e["eventtype"] == "MessageAdded"));

    // A rotated secret: both sign during the grace, so a receiver on either verifies.
    let rotated =
        server.post(&format!("/v1/webhooks/{id}/rotate-secret?grace_seconds=3600"), json!({})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert!(rotated.body["previous_secret_valid_until"].is_string(), "{:?}", rotated.body);
    let before = receiver.requests().len();
    server.customer_message(&conversation, "after the rotation").await;
    eventually(Duration::from_secs(10), "the next message delivered", || async {
        (receiver.distinct().len() == 6).then_some(())
    })
    .await;
    let after_rotation = receiver.requests()[before..].to_vec();
    assert_eq!(after_rotation[0].headers["webhook-signature"].split(' ').count(), 2);
    assert_eq!(
        crate::common::receiver::verify_with_reference(&secret, &after_rotation),
        after_rotation.len()
    );
    assert_eq!(
        crate::common::receiver::verify_with_reference(&new_secret, &after_rotation),
        after_rotation.len()
    );

    // A test ping answers what came back, and is logged.
    receiver.fail_next(1);
    let ping = server.post(&format!("/v1/webhooks/{id}/ping"), json!({})).await;
    assert_eq!(ping.status, StatusCode::OK, "{:?}", ping.body);
    assert_eq!(ping.body["outcome"], "failed");
    assert_eq!(ping.body["status_code"], 500);
    let ping = server.post(&format!("/v1/webhooks/{id}/ping"), json!({})).await;
    assert_eq!(ping.body["outcome"], "delivered", "{:?}", ping.body);
    let last = receiver.requests().last().unwrap().clone();
    assert_eq!(serde_json::from_str::<Value>(&last.body).unwrap()["type"], "colloquy.webhook.ping");

    // Deleted: nothing more is sent, and it is gone.
    let deleted = server.delete(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(server.get(&format!("/v1/webhooks/{id}")).await.status, StatusCode::NOT_FOUND);
    let sent = receiver.requests().len();
    server.customer_message(&conversation, "after the deletion").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.requests().len(), sent);
    let listed = server.get("/v1/webhooks").await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 0, "{:?}", listed.body);
}

async fn a_slow_subscriber_delays_no_other(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (slow, fast) = (Receiver::start().await, Receiver::start().await);
    slow.set_delay(Duration::from_secs(2));
    subscribe(&server, &slow.url, json!({"name": "slow"})).await;
    subscribe(&server, &fast.url, json!({"name": "fast"})).await;
    let conversation = server.conversation().await;
    for n in 0..8 {
        server.customer_message(&conversation, &format!("m{n}")).await;
    }
    eventually(Duration::from_secs(5), "the fast subscriber has every event", || async {
        (fast.distinct().len() == 10).then_some(())
    })
    .await;
    assert!(slow.requests().len() <= 3, "the slow one is still at its first events");
}

async fn subscriptions_are_versioned_and_checked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let receiver = Receiver::start().await;
    let (id, _) = subscribe(&server, &receiver.url, json!({})).await;
    let first = server.get(&format!("/v1/webhooks/{id}")).await;
    let stale = first.etag();
    let changed = server
        .call_with(
            reqwest::Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(json!({"name": "renamed", "event_types": ["StatusChanged"]})),
            &[("if-match", &stale)],
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(changed.body["version"], 2);
    assert_eq!(changed.body["event_types"], json!(["StatusChanged"]));
    let conflicting = server
        .call_with(
            reqwest::Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(json!({"active": false})),
            &[("if-match", &stale)],
        )
        .await;
    conflicting.assert_problem(StatusCode::PRECONDITION_FAILED);
    let versions = server.get(&format!("/v1/webhooks/{id}/versions")).await;
    assert_eq!(versions.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(versions.body["data"][0]["definition"]["name"], "receiver");
    // Its changes are events like any other: who changed the URL is on the record.
    let history = server.get(&format!("/v1/audit?aggregate_id={id}")).await;
    assert_eq!(history.status, StatusCode::OK, "{:?}", history.body);

    for (body, field) in [
        (json!({"name": "x", "url": "ftp://example.com/"}), "url"),
        (json!({"name": "x", "url": "https://user:pw@example.com/"}), "url"),
        (json!({"name": "x", "url": "https://example.com/", "event_types": ["not a type"]}), "event_types"),
        (json!({"name": "", "url": "https://example.com/"}), "name"),
    ] {
        let refused = server.post("/v1/webhooks", body).await;
        refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(refused.body["errors"][0]["field"], field, "{:?}", refused.body);
    }
    // Managing needs `webhooks:write` alone; reading, `webhooks:read`.
    let token = server.post("/v1/tokens", json!({"name": "hooks", "scopes": ["webhooks:write"]})).await;
    let writer = token.body["secret"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let made = client
        .post(server.url("/v1/webhooks"))
        .bearer_auth(&writer)
        .json(&json!({"name": "w", "url": receiver.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    let made: Value = made.json().await.unwrap();
    let path = format!("/v1/webhooks/{}", made["id"].as_str().unwrap());
    let patched = client
        .patch(server.url(&path))
        .bearer_auth(&writer)
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let read = client.get(server.url(&path)).bearer_auth(&writer).send().await.unwrap();
    assert_eq!(read.status(), StatusCode::FORBIDDEN);

    let unknown = server
        .post("/v1/webhooks", json!({"name": "x", "url": "https://example.com/", "secret": "mine"}))
        .await;
    unknown.assert_problem(StatusCode::BAD_REQUEST);
    let replay = server.post(&format!("/v1/webhooks/{id}/replay?from_position=0"), json!({})).await;
    replay.assert_problem(StatusCode::BAD_REQUEST);
    let missing = server.post(&format!("/v1/webhooks/{}/ping", uuid::Uuid::new_v4()), json!({})).await;
    missing.assert_problem(StatusCode::NOT_FOUND);
}

on_both_stores!(
    delivers_every_event_signed_in_order_through_failures,
    a_subscriber_failing_too_long_is_paused_and_resumes_where_it_stopped,
    a_slow_subscriber_delays_no_other,
    subscriptions_are_versioned_and_checked,
);

/// Without the operator's leave, a URL whose host is or resolves to an internal address is
/// refused, at creation and at a change; a public one is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_refused_unless_allowed() {
    let server = TestServer::start_with(Backend::Sqlite, |config| config.webhook_allow_private = false).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.20/",
        "http://[fd00::1]/",
        "http://0.0.0.0/",
    ] {
        let refused = server.post("/v1/webhooks", json!({"name": "x", "url": url})).await;
        let detail = refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(detail.contains("internal address"), "{url}: {detail}");
    }
    let (id, _) = subscribe(&server, "http://93.184.216.34/hook", json!({"active": false})).await;
    let changed = server.patch(&format!("/v1/webhooks/{id}"), json!({"url": "http://127.0.0.2/"})).await;
    changed.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
}
