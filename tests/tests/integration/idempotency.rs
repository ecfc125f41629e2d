//! `Idempotency-Key` on commands, on both stores: a retry gets the first response and appends
//! nothing, a different request with the same key is a 422, keys are per tenant and survive a
//! restart, and refusals that a corrected retry could fix release the key.

#![allow(clippy::unwrap_used)]

use crate::common;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Backend, TestServer};

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
    // A malformed header is a 400 even on a retry of a key whose response is kept.
    let malformed = [("idempotency-key", "shared-key"), ("x-correlation-id", "not-a-uuid")];
    server
        .call_with(Method::POST, &path, Some(message.clone()), &malformed)
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
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

/// The stored responses' rows, as (key, body) pairs, read straight from the store.
async fn stored_keys(server: &TestServer) -> Vec<(String, Vec<u8>)> {
    let store = server.config().open_store(&[]).await.unwrap();
    let sql = "SELECT key, COALESCE(body, '') FROM idempotency_keys ORDER BY key";
    if let Some(pool) = store.reads().postgres() {
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT key, COALESCE(body, ''::bytea) FROM idempotency_keys")
                .fetch_all(pool)
                .await
                .unwrap();
        rows
    } else {
        let pool = store.reads().sqlite().unwrap();
        sqlx::query_as(sql).fetch_all(pool).await.unwrap()
    }
}

/// A key is the token's own: another token sending it runs its own request, scope check
/// included, and never gets the first token's response. A secret shown once (a new token's, a
/// webhook's at its creation and rotation) is never stored: a retry answers 409 naming the
/// resource. Expired keys are purged by the server.
async fn keys_belong_to_their_token_and_keep_no_secret(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let path = format!("/v1/conversations/{id}/messages");
    let message = json!({"sender": {"kind": "customer"}, "text": "mine"});
    let key = [("idempotency-key", "shared-key")];
    let posted = server.call_with(Method::POST, &path, Some(message.clone()), &key).await;
    assert_eq!(posted.status, StatusCode::CREATED, "{:?}", posted.body);

    let create = json!({"name": "reader", "scopes": ["conversations:read"]});
    let token_key = [("idempotency-key", "token-1")];
    let created = server.call_with(Method::POST, "/v1/tokens", Some(create.clone()), &token_key).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let again = server.call_with(Method::POST, "/v1/tokens", Some(create), &token_key).await;
    let detail = again.assert_problem(StatusCode::CONFLICT);
    assert!(detail.contains("not kept") && !again.body.to_string().contains(&secret), "{detail}");
    assert_eq!(again.headers["location"], created.headers["location"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let listed = server.get("/v1/tokens").await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 2, "one token created: {:?}", listed.body);

    // Nor is a webhook's signing secret, at its creation or at a rotation: a retry of either
    // answers 409 naming the subscription, and rotates nothing.
    let hook = json!({"name": "crm", "url": "http://127.0.0.1:9/hook"});
    let hook_key = [("idempotency-key", "hook-1")];
    let made = server.call_with(Method::POST, "/v1/webhooks", Some(hook.clone()), &hook_key).await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let hook_secret = made.body["secret"].as_str().unwrap().to_owned();
    let hook_path = made.headers["location"].to_str().unwrap().to_owned();
    let again = server.call_with(Method::POST, "/v1/webhooks", Some(hook), &hook_key).await;
    let detail = again.assert_problem(StatusCode::CONFLICT);
    assert!(detail.contains("not kept") && !again.body.to_string().contains(&hook_secret), "{detail}");
    assert_eq!(again.headers["location"], made.headers["location"]);
    let rotate = format!("{hook_path}/rotate-secret");
    let rotate_key = [("idempotency-key", "rotate-1")];
    let rotated = server.call_with(Method::POST, &rotate, Some(json!({})), &rotate_key).await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let rotated_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    let again = server.call_with(Method::POST, &rotate, Some(json!({})), &rotate_key).await;
    let detail = again.assert_problem(StatusCode::CONFLICT);
    assert!(detail.contains("rotate") && !again.body.to_string().contains(&rotated_secret), "{detail}");
    assert_eq!(again.headers["location"].to_str().unwrap(), hook_path);
    let read = server.get(&hook_path).await;
    assert_eq!(
        read.body["secret_rotated_at"], rotated.body["secret_rotated_at"],
        "rotated once: {:?}",
        read.body
    );

    for (key, body) in stored_keys(&server).await {
        let body = String::from_utf8_lossy(&body);
        for secret in [&secret, &hook_secret, &rotated_secret] {
            assert!(!body.contains(secret.as_str()), "a secret is stored under {key}");
        }
    }

    // The reader's request with the admin's key runs: it is refused for its scope.
    let theirs = server
        .client
        .post(server.url(&path))
        .bearer_auth(&secret)
        .header("idempotency-key", "shared-key")
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::FORBIDDEN);
    assert!(theirs.headers().get("idempotent-replayed").is_none());
    assert_eq!(server.all_events("conversations", &id).await.len(), 2, "opened and one message");

    // A key past its 24 hours is purged when the server starts (and every ten minutes).
    let store = server.config().open_store(&[]).await.unwrap();
    let old = chrono::Utc::now().timestamp_millis() - 25 * 3_600_000;
    let insert = "INSERT INTO idempotency_keys (tenant_id, key, request_hash, created_at) VALUES ('default', 'old', 'x', $1)";
    if let Some(pool) = store.reads().postgres() {
        sqlx::query(insert).bind(old).execute(pool).await.unwrap();
    } else {
        sqlx::query(insert).bind(old).execute(store.reads().sqlite().unwrap()).await.unwrap();
    }
    assert!(stored_keys(&server).await.iter().any(|(key, _)| key == "old"));
    server.restart().await;
    common::eventually(std::time::Duration::from_secs(10), "the expired key is purged", || async {
        (!stored_keys(&server).await.iter().any(|(key, _)| key == "old")).then_some(())
    })
    .await;
    assert_eq!(stored_keys(&server).await.len(), 4, "the live keys stay");
    server.stop().await;
}

on_both_stores!(
    a_retry_gets_the_first_response_and_appends_nothing,
    concurrent_requests_with_one_key_run_once,
    keys_belong_to_their_token_and_keep_no_secret,
);
