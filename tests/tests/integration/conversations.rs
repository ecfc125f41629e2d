//! The life of a conversation over HTTP, on the embedded store and on PostgreSQL: commands,
//! history, restarts, concurrent writers, optimistic concurrency.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{Backend, TestServer};

fn event_types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["event_type"].as_str().unwrap()).collect()
}

async fn the_full_life_of_a_conversation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let contact_id = server.contact().await;
    let opened = server
        .post(
            "/v1/conversations",
            json!({"contact_id": contact_id, "channel": "whatsapp", "inbox_id": "inbox-1", "subject": "Where is my order?", "priority": "high"}),
        )
        .await;
    assert_eq!(opened.status, StatusCode::CREATED);
    assert_eq!(opened.etag(), "\"1\"");
    let id = opened.body["id"].as_str().unwrap().to_owned();
    assert_eq!(opened.headers["location"].to_str().unwrap(), format!("/v1/conversations/{id}"));
    assert_eq!(opened.body["status"], "open");
    assert_eq!(opened.body["number"], 1);

    let asked = server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "Where is my order?"}),
        )
        .await;
    assert_eq!(asked.status, StatusCode::CREATED, "{:?}", asked.body);
    assert_eq!(asked.body["sender"]["id"], contact_id.as_str());
    let question_id = asked.body["id"].as_str().unwrap().to_owned();

    let answered = server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"sender": {"kind": "user", "id": "agent-7"}, "text": "On its way!", "reply_to": question_id}),
        )
        .await;
    assert_eq!(answered.status, StatusCode::CREATED, "{:?}", answered.body);
    let answer_id = answered.body["id"].as_str().unwrap().to_owned();

    let note = server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"sender": {"kind": "user", "id": "agent-7"}, "text": "Courier delayed", "visibility": "internal", "mentions": ["agent-9"]}),
        )
        .await;
    assert_eq!(note.status, StatusCode::CREATED);

    let delivered = server
        .post(
            &format!("/v1/conversations/{id}/messages/{answer_id}/delivery"),
            json!({"status": "delivered"}),
        )
        .await;
    assert_eq!(delivered.status, StatusCode::OK, "{:?}", delivered.body);
    assert_eq!(delivered.body["delivery"]["status"], "delivered");

    let reacted = server
        .patch(
            &format!("/v1/conversations/{id}/messages/{answer_id}"),
            json!({"reactions": {"add": [{"emoji": "🙏", "sender": {"kind": "customer", "id": contact_id}}]}}),
        )
        .await;
    assert_eq!(reacted.status, StatusCode::OK, "{:?}", reacted.body);
    assert_eq!(reacted.body["reactions"][0]["emoji"], "🙏");

    let edited = server
        .patch(
            &format!("/v1/conversations/{id}/messages/{answer_id}"),
            json!({"text": "On its way, arriving Monday!"}),
        )
        .await;
    assert_eq!(edited.body["text"], "On its way, arriving Monday!");
    assert_eq!(edited.body["edit_history"][0]["previous_text"], "On its way!");

    let snoozed = server
        .post(
            &format!("/v1/conversations/{id}/status"),
            json!({"status": "snoozed", "snoozed_until": "2099-01-01T09:00:00Z"}),
        )
        .await;
    assert_eq!(snoozed.status, StatusCode::OK, "{:?}", snoozed.body);
    assert_eq!(snoozed.body["status"], "snoozed");
    assert_eq!(snoozed.body["snoozed_until"], "2099-01-01T09:00:00Z");

    let assigned = server
        .post(
            &format!("/v1/conversations/{id}/assignment"),
            json!({"assignee_id": "agent-7", "team_id": "logistics"}),
        )
        .await;
    assert_eq!(assigned.body["assignee_id"], "agent-7");
    assert_eq!(assigned.body["team_id"], "logistics");

    let labelled =
        server.post(&format!("/v1/conversations/{id}/labels"), json!({"add": ["Shipping", "vip"]})).await;
    assert_eq!(labelled.body["labels"], json!(["shipping", "vip"]));

    let read = server.post(&format!("/v1/conversations/{id}/read"), json!({"user_id": "agent-7"})).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["unread_count"], 0);

    let patched = server
        .patch(&format!("/v1/conversations/{id}"), json!({"starred": true, "priority": "urgent"}))
        .await;
    assert_eq!(patched.body["starred"], true);
    assert_eq!(patched.body["priority"], "urgent");

    let closed = server.post(&format!("/v1/conversations/{id}/status"), json!({"status": "closed"})).await;
    assert_eq!(closed.body["status"], "closed");
    let reopened = server.post(&format!("/v1/conversations/{id}/status"), json!({"status": "open"})).await;
    assert_eq!(reopened.body["status"], "open");

    let unassigned = server.delete(&format!("/v1/conversations/{id}/assignment")).await;
    assert_eq!(unassigned.body["assignee_id"], Value::Null);

    let fetched = server.get(&format!("/v1/conversations/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["message_count"], 3);
    assert_eq!(fetched.body["response_count"], 1);
    assert_eq!(fetched.body["last_message"]["preview"], "On its way!");
    assert_eq!(fetched.body["participant_ids"], json!(["agent-7"]));
    assert_eq!(fetched.etag(), format!("\"{}\"", fetched.body["version"]));

    let messages = server.get(&format!("/v1/conversations/{id}/messages")).await;
    let texts: Vec<&str> =
        messages.body["data"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec!["Where is my order?", "On its way, arriving Monday!", "Courier delayed"]);

    let events = server.all_events("conversations", &id).await;
    assert_eq!(
        event_types(&events),
        vec![
            "ConversationOpened",
            "MessageAdded",
            "MessageAdded",
            "MessageAdded",
            "DeliveryStatusChanged",
            "ReactionAdded",
            "MessageEdited",
            "StatusChanged",
            "ConversationAssigned",
            "LabelsAdded",
            "ConversationRead",
            "PriorityChanged",
            "ConversationStarred",
            "StatusChanged",
            "StatusChanged",
            "ConversationUnassigned",
        ]
    );
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["sequence"], i as u64 + 1);
        assert_eq!(event["metadata"]["tenant_id"], "default");
        assert_eq!(event["metadata"]["actor_kind"], "token");
        assert!(event["metadata"]["event_id"].is_string());
        assert!(event["metadata"]["request_id"].is_string());
        assert!(event["metadata"]["correlation_id"].is_string());
        assert!(event["metadata"]["recorded_at"].is_string());
    }
    let positions: Vec<i64> = events.iter().map(|e| e["position"].as_i64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "global positions increase: {positions:?}");

    let deleted = server.delete(&format!("/v1/conversations/{id}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    server.get(&format!("/v1/conversations/{id}")).await.assert_problem(StatusCode::GONE);
    let refused = server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "hello?"}),
        )
        .await;
    let detail = refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("deleted"), "{detail}");
    assert_eq!(server.all_events("conversations", &id).await.len(), events.len() + 1);
    server.stop().await;
}

async fn a_customer_message_reopens_a_snoozed_conversation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    server.post(&format!("/v1/conversations/{id}/status"), json!({"status": "snoozed"})).await;
    server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "ping"}),
        )
        .await;
    let fetched = server.get(&format!("/v1/conversations/{id}")).await;
    assert_eq!(fetched.body["status"], "open");
    let events = server.all_events("conversations", &id).await;
    let last = events.last().unwrap();
    assert_eq!(last["event_type"], "StatusChanged");
    assert_eq!(last["data"]["reason"], "customer_message");
    server.stop().await;
}

async fn every_stream_is_intact_after_a_restart(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let first = server.conversation().await;
    let second = server.conversation().await;
    for n in 0..5 {
        let reply = server
            .post(
                &format!("/v1/conversations/{first}/messages"),
                json!({"sender": {"kind": "customer"}, "text": format!("message {n}")}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    server.post(&format!("/v1/conversations/{second}/labels"), json!({"add": ["billing"]})).await;
    let before_first = server.get(&format!("/v1/conversations/{first}")).await;
    let before_events = server.all_events("conversations", &first).await;

    server.restart().await;

    let after_first = server.get(&format!("/v1/conversations/{first}")).await;
    assert_eq!(after_first.body, before_first.body, "state rebuilt from the store equals the state before");
    // A double apply on load would count 10 here.
    assert_eq!(after_first.body["message_count"], 5);
    assert_eq!(server.all_events("conversations", &first).await, before_events);
    let after_second = server.get(&format!("/v1/conversations/{second}")).await;
    assert_eq!(after_second.body["labels"], json!(["billing"]));

    // Numbers and versions continue where they were.
    let third = server.conversation().await;
    assert_eq!(server.get(&format!("/v1/conversations/{third}")).await.body["number"], 3);
    let more = server
        .post(
            &format!("/v1/conversations/{first}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "after"}),
        )
        .await;
    assert_eq!(more.etag(), "\"7\"");
    server.stop().await;
}

async fn concurrent_posts_to_one_conversation_are_all_stored_in_one_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let posts = (0..20).map(|n| {
        let server = &server;
        let id = &id;
        async move {
            server
                .post(
                    &format!("/v1/conversations/{id}/messages"),
                    json!({"sender": {"kind": "customer"}, "text": format!("concurrent {n}")}),
                )
                .await
        }
    });
    let replies = futures::future::join_all(posts).await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }
    let events = server.all_events("conversations", &id).await;
    assert_eq!(events.len(), 21);
    let sequences: Vec<u64> = events.iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    assert_eq!(sequences, (1..=21).collect::<Vec<u64>>(), "no gaps, no duplicates");
    let texts: HashSet<String> =
        events[1..].iter().map(|e| e["data"]["content"]["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(texts.len(), 20, "every post stored once");
    let messages = server.get(&format!("/v1/conversations/{id}/messages?limit=100")).await;
    let listed: Vec<&str> =
        messages.body["data"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    let in_events: Vec<&str> =
        events[1..].iter().map(|e| e["data"]["content"]["text"].as_str().unwrap()).collect();
    assert_eq!(listed, in_events, "the message list and the stream agree on one order");
    server.stop().await;
}

async fn a_stale_if_match_gets_412_and_a_current_one_goes_through(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let current = server.get(&format!("/v1/conversations/{id}")).await.etag();
    let path = format!("/v1/conversations/{id}/status");
    let first = server
        .call_with(Method::POST, &path, Some(json!({"status": "pending"})), &[("if-match", &current)])
        .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let stale = server
        .call_with(Method::POST, &path, Some(json!({"status": "closed"})), &[("if-match", &current)])
        .await;
    let detail = stale.assert_problem(StatusCode::PRECONDITION_FAILED);
    assert!(detail.contains("current version is 2"), "{detail}");
    let nonsense = server
        .call_with(Method::POST, &path, Some(json!({"status": "closed"})), &[("if-match", "\"abc\"")])
        .await;
    assert!(nonsense.assert_problem(StatusCode::BAD_REQUEST).contains("not an ETag this API issues"));
    let events = server.all_events("conversations", &id).await;
    assert_eq!(events.len(), 2, "refused writes appended nothing");
    let fresh = first.etag();
    let second = server
        .call_with(Method::POST, &path, Some(json!({"status": "closed"})), &[("if-match", &fresh)])
        .await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.etag(), "\"3\"");
    server.stop().await;
}

async fn conversation_numbers_count_up_per_tenant(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut numbers = Vec::new();
    for _ in 0..3 {
        let id = server.conversation().await;
        numbers.push(server.get(&format!("/v1/conversations/{id}")).await.body["number"].as_u64().unwrap());
    }
    assert_eq!(numbers, vec![1, 2, 3]);
    // Opened at once, they take the next numbers, each once, none skipped.
    let opened = futures::future::join_all((0..20).map(|_| server.conversation())).await;
    let mut numbers = Vec::new();
    for id in opened {
        numbers.push(server.get(&format!("/v1/conversations/{id}")).await.body["number"].as_u64().unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (4..24).collect::<Vec<u64>>());
    server.stop().await;
}

async fn contacts_are_created_read_and_patched(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server
        .post(
            "/v1/contacts",
            json!({"first_name": "Bo", "email": "BO@Example.com", "phone": "+44 7911 123456", "preferred_channel": "sms", "metadata": {"tier": "gold"}, "labels": ["VIP"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["email"], "BO@example.com");
    assert_eq!(created.body["phone"], "+447911123456");
    assert_eq!(created.body["full_name"], "Bo");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let patched = server
        .patch(&format!("/v1/contacts/{id}"), json!({"last_name": "Chen", "email": null, "metadata": {"tier": null, "plan": "pro"}, "status": "inactive"}))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(patched.body["full_name"], "Bo Chen");
    assert_eq!(patched.body["email"], Value::Null);
    assert_eq!(patched.body["metadata"], json!({"plan": "pro"}));
    assert_eq!(patched.body["status"], "inactive");
    assert_eq!(patched.etag(), "\"3\"");
    let fetched = server.get(&format!("/v1/contacts/{id}")).await;
    assert_eq!(fetched.body, patched.body);
    let events = server.all_events("contacts", &id).await;
    assert_eq!(event_types(&events), vec!["ContactCreated", "ContactUpdated", "ContactStatusChanged"]);
    server.stop().await;
}

async fn a_cache_smaller_than_the_conversations_loses_nothing(backend: Backend) {
    // A budget of nothing: only the conversation in use stays, so each command finds the other
    // one evicted and loads it from the store again.
    let server = TestServer::start_with(backend, |config| config.aggregate_cache_mb = 0).await;
    let first = server.conversation().await;
    let second = server.conversation().await;
    for n in 0..6 {
        for id in [&first, &second] {
            let reply = server
                .post(
                    &format!("/v1/conversations/{id}/messages"),
                    json!({"sender": {"kind": "customer"}, "text": format!("{id} {n}")}),
                )
                .await;
            assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
            assert_eq!(reply.etag(), format!("\"{}\"", n + 2), "versions count on after each reload");
        }
    }
    // Each message found its conversation evicted and read it from its first event: twelve
    // loads beside the two openings, of 1 + n events each.
    let loads = server.metric("colloquy_aggregate_cache_loads_total{aggregate=\"conversation\"}").await;
    let read = server.metric("colloquy_aggregate_cache_events_read_total{aggregate=\"conversation\"}").await;
    assert!(loads >= 14.0, "{loads} loads");
    assert!(read >= 2.0 * (1..=6).sum::<u32>() as f64, "{read} events read");
    for id in [&first, &second] {
        let messages = server.get(&format!("/v1/conversations/{id}/messages?limit=100")).await;
        let texts: Vec<&str> =
            messages.body["data"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
        let expected: Vec<String> = (0..6).map(|n| format!("{id} {n}")).collect();
        assert_eq!(texts, expected);
        assert_eq!(server.all_events("conversations", id).await.len(), 7);
    }
    server.stop().await;
}

/// The version of the snapshot kept of conversation `id`, if any, read from the store beside the
/// server.
async fn snapshot_version(server: &TestServer, id: &str) -> Option<i64> {
    let store = server.config().open_store(&[]).await.unwrap();
    let sql = "SELECT version FROM snapshots WHERE aggregate_type = 'conversation' AND aggregate_id = $1";
    let version = match store.reads() {
        colloquy_infra::store::Reads::Postgres(pool) => {
            sqlx::query_scalar(sql).bind(id).fetch_optional(pool).await.unwrap()
        }
        colloquy_infra::store::Reads::Sqlite(pool) => {
            sqlx::query_scalar(sql).bind(id).fetch_optional(pool).await.unwrap()
        }
    };
    store.close().await;
    version
}

/// Breaks the snapshot kept of conversation `id`: its state no longer reads back.
async fn break_snapshot(server: &TestServer, id: &str) {
    let store = server.config().open_store(&[]).await.unwrap();
    let sql = "UPDATE snapshots SET state = 'not a state' WHERE aggregate_id = $1";
    match store.reads() {
        colloquy_infra::store::Reads::Postgres(pool) => {
            assert_eq!(sqlx::query(sql).bind(id).execute(pool).await.unwrap().rows_affected(), 1)
        }
        colloquy_infra::store::Reads::Sqlite(pool) => {
            assert_eq!(sqlx::query(sql).bind(id).execute(pool).await.unwrap().rows_affected(), 1)
        }
    }
    store.close().await;
}

/// Moves the snapshot kept of conversation `id` to `version`, its state unchanged.
async fn set_snapshot_version(server: &TestServer, id: &str, version: i64) {
    let store = server.config().open_store(&[]).await.unwrap();
    let sql = "UPDATE snapshots SET version = $2 WHERE aggregate_id = $1";
    colloquy_infra::on_pool!(store, |pool| {
        assert_eq!(sqlx::query(sql).bind(id).bind(version).execute(pool).await.unwrap().rows_affected(), 1)
    });
    store.close().await;
}

/// A conversation's state is kept as a snapshot every `snapshot_every` events; loading it when
/// it is not cached (here after a restart) reads the snapshot and only the events after it, and
/// gives what the whole history gives. A snapshot that does not read back is passed over for
/// the events, and replaced.
async fn a_conversation_not_cached_is_loaded_from_its_snapshot(backend: Backend) {
    let mut server = TestServer::start_with(backend, |config| config.snapshot_every = 10).await;
    let id = server.conversation().await;
    for n in 0..24 {
        server.customer_message(&id, &format!("message {n}")).await;
    }
    common::eventually(std::time::Duration::from_secs(10), "a snapshot at version 20", || async {
        (snapshot_version(&server, &id).await == Some(20)).then_some(())
    })
    .await;
    let messages = format!("/v1/conversations/{id}/messages?limit=100");
    let before = server.get(&messages).await.body;
    assert_eq!(before["data"].as_array().unwrap().len(), 24);

    server.restart().await;
    assert_eq!(server.get(&messages).await.body, before, "the same messages, from the snapshot");
    let metric = |name: &str| format!("colloquy_aggregate_cache_{name}{{aggregate=\"conversation\"}}");
    assert_eq!(server.metric(&metric("loads_total")).await, 1.0);
    assert_eq!(server.metric(&metric("snapshot_loads_total")).await, 1.0);
    assert_eq!(server.metric(&metric("events_read_total")).await, 5.0, "the events after version 20 alone");
    let reply = server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "more"}),
        )
        .await;
    assert_eq!(reply.etag(), "\"26\"", "{:?}", reply.body);

    break_snapshot(&server, &id).await;
    server.restart().await;
    let after = server.get(&messages).await.body;
    assert_eq!(after["data"].as_array().unwrap().len(), 25);
    assert_eq!(after["data"].as_array().unwrap()[..24], before["data"].as_array().unwrap()[..]);
    assert_eq!(server.metric(&metric("snapshot_loads_total")).await, 0.0);
    assert_eq!(server.metric(&metric("events_read_total")).await, 26.0, "the whole history");
    common::eventually(std::time::Duration::from_secs(10), "the snapshot taken again", || async {
        (snapshot_version(&server, &id).await == Some(26)).then_some(())
    })
    .await;

    // A snapshot ahead of the stream (a read models' file from a later backup than the events')
    // describes events the store does not have: passed over, and replaced.
    set_snapshot_version(&server, &id, 1_000).await;
    server.restart().await;
    assert_eq!(server.get(&messages).await.body["data"].as_array().unwrap().len(), 25);
    assert_eq!(server.metric(&metric("snapshot_loads_total")).await, 0.0);
    assert_eq!(server.metric(&metric("events_read_total")).await, 26.0, "the whole history");
    common::eventually(std::time::Duration::from_secs(10), "the snapshot replaced", || async {
        (snapshot_version(&server, &id).await == Some(26)).then_some(())
    })
    .await;
    server.stop().await;
}

on_both_stores!(
    the_full_life_of_a_conversation,
    a_conversation_not_cached_is_loaded_from_its_snapshot,
    a_customer_message_reopens_a_snoozed_conversation,
    every_stream_is_intact_after_a_restart,
    concurrent_posts_to_one_conversation_are_all_stored_in_one_order,
    a_stale_if_match_gets_412_and_a_current_one_goes_through,
    conversation_numbers_count_up_per_tenant,
    contacts_are_created_read_and_patched,
    a_cache_smaller_than_the_conversations_loses_nothing,
);

/// Two server processes on one PostgreSQL database write the same conversation at once: the
/// store's optimistic lock and the runner's retry keep every event, in one gap-free order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_writing_one_conversation_lose_nothing() {
    let server = TestServer::start(Backend::Postgres).await;
    let other = server.second_instance().await;
    let other_base = format!("http://{}", other.addr);
    let id = server.conversation().await;
    let posts = (0..30).map(|n| {
        let base = if n % 2 == 0 { server.base.clone() } else { other_base.clone() };
        let client = server.client.clone();
        let token = server.token.clone();
        let id = id.clone();
        async move {
            client
                .post(format!("{base}/v1/conversations/{id}/messages"))
                .bearer_auth(token)
                .json(&json!({"sender": {"kind": "customer"}, "text": format!("from both {n}")}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures::future::join_all(posts).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED), "{statuses:?}");
    let events = server.all_events("conversations", &id).await;
    let sequences: Vec<u64> = events.iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    assert_eq!(sequences, (1..=31).collect::<Vec<u64>>());
    // The first instance's cache is behind the second's writes; it must catch up on read.
    let fetched = server.get(&format!("/v1/conversations/{id}")).await;
    assert_eq!(fetched.body["message_count"], 30);
    other.stop().await.unwrap();
    server.stop().await;
}
