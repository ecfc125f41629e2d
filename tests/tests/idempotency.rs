//! `Idempotency-Key` on commands, on both stores: a retry gets the first response and appends
//! nothing, a different request with the same key is a 422, keys are per tenant and survive a
//! restart, and refusals that a corrected retry could fix release the key.

#![allow(clippy::unwrap_used)]

mod common;

use reqwest::{Method, StatusCode};
use serde_json::json;

use common::{Backend, TestServer};

async fn a_retry_gets_the_first_response_and_appends_nothing(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let contact = server.contact().await;
    let open = json!({"contact_id": contact, "channel": "sms", "subject": "Once"});
    let key = [("idempotency-key", "open-1")];
    let first = server.call_with(Method::POST, "/v1/conversations", Some(open.clone()), &key).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    let id = first.body["id"].as_str().unwrap().to_owned();

    let again = server.call_with(Method::POST, "/v1/conversations", Some(open.clone()), &key).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body, "the same ids, the same body");
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(again.headers["etag"], first.headers["etag"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    // A message posted twice with one key is one message.
    let message = json!({"sender": {"kind": "customer"}, "text": "hello"});
    let path = format!("/v1/conversations/{id}/messages");
    let key = [("idempotency-key", "message-1")];
    let posted = server.call_with(Method::POST, &path, Some(message.clone()), &key).await;
    assert_eq!(posted.status, StatusCode::CREATED, "{:?}", posted.body);
    let repeated = server.call_with(Method::POST, &path, Some(message.clone()), &key).await;
    assert_eq!(repeated.body["id"], posted.body["id"]);
    let events = server.all_events("conversations", &id).await;
    assert_eq!(events.len(), 2, "opened and one message: {events:?}");

    // The same key with another body is refused; the first result stands.
    let other = json!({"sender": {"kind": "customer"}, "text": "something else"});
    let refused = server.call_with(Method::POST, &path, Some(other), &key).await;
    let detail = refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("different request"), "{detail}");

    // Keys survive a restart.
    server.restart().await;
    let after_restart = server.call_with(Method::POST, &path, Some(message), &key).await;
    assert_eq!(after_restart.body["id"], posted.body["id"]);
    assert_eq!(after_restart.headers["idempotent-replayed"], "true");
    assert_eq!(server.all_events("conversations", &id).await.len(), 2);

    // Bad input releases the key: the corrected request runs under it.
    let key = [("idempotency-key", "fix-me")];
    let bad = server.call_with(Method::POST, &path, Some(json!({"text": 5})), &key).await;
    bad.assert_problem(StatusCode::BAD_REQUEST);
    let fixed = server
        .call_with(Method::POST, &path, Some(json!({"sender": {"kind": "customer"}, "text": "fixed"})), &key)
        .await;
    assert_eq!(fixed.status, StatusCode::CREATED, "{:?}", fixed.body);

    // A key that is not a key.
    let long = "k".repeat(300);
    for bad_key in [long.as_str(), "has space"] {
        let reply = server
            .call_with(
                Method::POST,
                &path,
                Some(json!({"sender": {"kind": "customer"}, "text": "x"})),
                &[("idempotency-key", bad_key)],
            )
            .await;
        reply.assert_problem(StatusCode::BAD_REQUEST);
    }
    assert_eq!(server.all_events("conversations", &id).await.len(), 3);
    server.stop().await;
}

async fn concurrent_requests_with_one_key_run_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let path = format!("/v1/conversations/{id}/messages");
    let body = json!({"sender": {"kind": "customer"}, "text": "race"});
    let key = [("idempotency-key", "race-1")];
    let replies = futures::future::join_all(
        (0..8).map(|_| server.call_with(Method::POST, &path, Some(body.clone()), &key)),
    )
    .await;
    let created: Vec<_> = replies.iter().filter(|r| r.status == StatusCode::CREATED).collect();
    assert!(!created.is_empty());
    for reply in &replies {
        assert!(
            reply.status == StatusCode::CREATED || reply.status == StatusCode::CONFLICT,
            "{:?}",
            reply.body
        );
    }
    assert!(created.iter().all(|r| r.body["id"] == created[0].body["id"]));
    assert_eq!(server.all_events("conversations", &id).await.len(), 2, "one message, whatever the race");
    server.stop().await;
}

on_both_stores!(
    a_retry_gets_the_first_response_and_appends_nothing,
    concurrent_requests_with_one_key_run_once,
);
