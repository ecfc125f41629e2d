//! `POST /v1/commands/{correlation_id}/revert` on both stores: a bulk resolve with a label sweep
//! (one correlation id over many requests) is changed back field by field with compensating
//! events, each caused by the request's last event on its aggregate; a revert of what cannot be
//! undone, or of an aggregate that changed since, is refused whole with its reasons.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{Backend, Reply, TestServer};

async fn with_correlation(server: &TestServer, method: Method, path: &str, body: Value, id: &str) -> Reply {
    let reply = server.call_with(method, path, Some(body), &[("x-correlation-id", id)]).await;
    assert!(reply.status.is_success(), "{path}: {:?}", reply.body);
    reply
}

/// Status, labels and priority of a conversation, and its version.
async fn shown(server: &TestServer, id: &str) -> (Value, Value, Value, i64) {
    let events = server.all_events("conversations", id).await;
    let read = server.get(&format!("/v1/conversations/{id}")).await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    let version = i64::try_from(events.len()).unwrap();
    (read.body["status"].clone(), read.body["labels"].clone(), read.body["priority"].clone(), version)
}

async fn a_bulk_resolve_and_a_label_sweep_are_reverted_and_caused_by_them(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = server.conversation().await;
        let labelled =
            server.post(&format!("/v1/conversations/{id}/labels"), json!({"add": ["billing"]})).await;
        assert!(labelled.status.is_success(), "{:?}", labelled.body);
        ids.push(id);
    }
    let mut before = Vec::new();
    for id in &ids {
        before.push(shown(&server, id).await);
    }
    let bulk = uuid::Uuid::now_v7().to_string();
    let mut last_event_ids = Vec::new();
    for id in &ids {
        let path = format!("/v1/conversations/{id}");
        with_correlation(
            &server,
            Method::POST,
            &format!("{path}/status"),
            json!({"status": "closed"}),
            &bulk,
        )
        .await;
        let sweep = json!({"add": ["swept"], "remove": ["billing"]});
        with_correlation(&server, Method::POST, &format!("{path}/labels"), sweep, &bulk).await;
        with_correlation(&server, Method::PATCH, &path, json!({"priority": "urgent"}), &bulk).await;
        let events = server.all_events("conversations", id).await;
        last_event_ids.push(events.last().unwrap()["metadata"]["event_id"].clone());
    }
    let changed = shown(&server, &ids[0]).await;
    assert_eq!((&changed.0, &changed.1, &changed.2), (&json!("closed"), &json!(["swept"]), &json!("urgent")));

    // Only the admin reverts; an unknown request is a 404.
    let unknown = server.post(&format!("/v1/commands/{}/revert", uuid::Uuid::now_v7()), json!({})).await;
    unknown.assert_problem(StatusCode::NOT_FOUND);

    let reverted = server.post(&format!("/v1/commands/{bulk}/revert"), json!({})).await;
    assert_eq!(reverted.status, StatusCode::OK, "{:?}", reverted.body);
    assert!(reverted.headers.contains_key("colloquy-position"));
    let listed = reverted.body["reverted"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{:?}", reverted.body);
    let revert_correlation = reverted.body["correlation_id"].clone();
    for ((id, was), cause) in ids.iter().zip(&before).zip(&last_event_ids) {
        let now = shown(&server, id).await;
        assert_eq!((&now.0, &now.1, &now.2), (&was.0, &was.1, &was.2), "{id} is as it was");
        // Each compensating event: caused by the request's last event here, in the revert's correlation.
        let events = server.all_events("conversations", id).await;
        let compensating = &events[usize::try_from(changed.3).unwrap()..];
        assert!(!compensating.is_empty());
        for event in compensating {
            assert_eq!(&event["metadata"]["causation_id"], cause, "{event}");
            assert_eq!(event["metadata"]["correlation_id"], revert_correlation, "{event}");
        }
        let types: Vec<&str> = compensating.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
        assert!(types.contains(&"StatusChanged") && types.contains(&"LabelsAdded"), "{types:?}");
    }

    // Reverting again finds each conversation changed since (by the revert itself).
    let again = server.post(&format!("/v1/commands/{bulk}/revert"), json!({})).await;
    assert!(again.assert_problem(StatusCode::CONFLICT).contains("changed since"), "{:?}", again.body);
    // And the revert is itself a request that can be reverted.
    let redone = server
        .post(&format!("/v1/commands/{}/revert", revert_correlation.as_str().unwrap()), json!({}))
        .await;
    assert_eq!(redone.status, StatusCode::OK, "{:?}", redone.body);
    assert_eq!(shown(&server, &ids[1]).await.0, json!("closed"));
}

async fn what_cannot_be_undone_refuses_the_whole_revert_with_its_reason(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let request = uuid::Uuid::now_v7().to_string();
    let path = format!("/v1/conversations/{id}");
    with_correlation(
        &server,
        Method::POST,
        &format!("{path}/status"),
        json!({"status": "pending"}),
        &request,
    )
    .await;
    let message = json!({"sender": {"kind": "user", "id": "agent-1"}, "text": "on its way"});
    with_correlation(&server, Method::POST, &format!("{path}/messages"), message, &request).await;
    let version = shown(&server, &id).await.3;
    let refused = server.post(&format!("/v1/commands/{request}/revert"), json!({})).await;
    let detail = refused.assert_problem(StatusCode::CONFLICT);
    assert!(detail.contains("cannot be unsent"), "{detail}");
    let after = shown(&server, &id).await;
    assert_eq!((after.0, after.3), (json!("pending"), version), "nothing of it was undone");

    // A contact's change is reverted from its state before the request.
    let contact = server.contact().await;
    let patch = uuid::Uuid::now_v7().to_string();
    let body = json!({"email": "new@example.com", "metadata": {"tier": "gold"}});
    with_correlation(&server, Method::PATCH, &format!("/v1/contacts/{contact}"), body, &patch).await;
    let reverted = server.post(&format!("/v1/commands/{patch}/revert"), json!({})).await;
    assert_eq!(reverted.status, StatusCode::OK, "{:?}", reverted.body);
    let read = server.get(&format!("/v1/contacts/{contact}")).await;
    assert_eq!((&read.body["email"], &read.body["metadata"]), (&Value::Null, &json!({})), "{:?}", read.body);
    assert_eq!(read.body["phone"], "+14155550123");
}

on_both_stores!(
    a_bulk_resolve_and_a_label_sweep_are_reverted_and_caused_by_them,
    what_cannot_be_undone_refuses_the_whole_revert_with_its_reason,
);
