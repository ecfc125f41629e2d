//! Graceful shutdown under load: concurrent clients open conversations and add messages, each
//! command with an `Idempotency-Key`, while the server stops gracefully (as `colloquy serve`
//! does on SIGTERM: `Running::stop` is what its signal handler runs). After a restart on the same
//! store every acknowledged command is there, retrying any command with its key neither applies
//! it twice nor finds it stuck half-done, and the read model catches up to the log.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{Backend, TestServer};
use colloquy_infra::checkpoints::all as all_checkpoints;

const CLIENTS: usize = 8;
const MESSAGES_PER_CONVERSATION: usize = 4;
/// Acknowledged commands before the shutdown begins, so that it meets a steady load.
const ACKNOWLEDGED_BEFORE_SHUTDOWN: usize = 80;

#[derive(Debug, Clone)]
enum Effect {
    Contact(String),
    Conversation(String),
    Message { conversation: String, message: String },
}

/// One command a client sent, and the answer it got, if any.
#[derive(Debug, Clone)]
struct Sent {
    key: String,
    path: String,
    body: Value,
    effect: Effect,
    answer: Option<(StatusCode, Value)>,
}

impl Sent {
    fn acknowledged(&self) -> bool {
        self.answer.as_ref().is_some_and(|(status, _)| status.is_success())
    }
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    sent: &Sent,
) -> Option<(StatusCode, Value, bool)> {
    let response = client
        .post(format!("{base}{}", sent.path))
        .bearer_auth(token)
        .header("idempotency-key", &sent.key)
        .json(&sent.body)
        .send()
        .await
        .ok()?;
    let status = response.status();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let body = response.json().await.unwrap_or(Value::Null);
    Some((status, body, replayed))
}

/// A client's commands: a contact, a conversation with it, then messages, until the server goes
/// away. It stops at the first command without an answer, since the next would depend on it.
async fn client(base: String, token: String, acknowledged: Arc<AtomicUsize>, log: Arc<Mutex<Vec<Sent>>>) {
    let http = reqwest::Client::new();
    loop {
        let contact = uuid::Uuid::new_v4().to_string();
        let conversation = uuid::Uuid::new_v4().to_string();
        let mut commands = vec![
            Sent {
                key: format!("contact-{contact}"),
                path: "/v1/contacts".into(),
                body: json!({"id": contact, "first_name": "Load"}),
                effect: Effect::Contact(contact.clone()),
                answer: None,
            },
            Sent {
                key: format!("conversation-{conversation}"),
                path: "/v1/conversations".into(),
                body: json!({"id": conversation, "contact_id": contact, "channel": "chat", "labels": ["load"]}),
                effect: Effect::Conversation(conversation.clone()),
                answer: None,
            },
        ];
        for n in 0..MESSAGES_PER_CONVERSATION {
            let message = uuid::Uuid::new_v4().to_string();
            commands.push(Sent {
                key: format!("message-{message}"),
                path: format!("/v1/conversations/{conversation}/messages"),
                body: json!({"id": message, "sender": {"kind": "customer"}, "text": format!("m{n}")}),
                effect: Effect::Message { conversation: conversation.clone(), message },
                answer: None,
            });
        }
        for mut sent in commands {
            let answer = post(&http, &base, &token, &sent).await;
            sent.answer = answer.as_ref().map(|(status, body, _)| (*status, body.clone()));
            let done = sent.acknowledged();
            log.lock().unwrap().push(sent);
            if !done {
                return;
            }
            acknowledged.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn acknowledged_commands_survive_a_graceful_shutdown_under_load(backend: Backend) {
    let started = Instant::now();
    let mut server = TestServer::start(backend).await;
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(client(server.base.clone(), server.token.clone(), acknowledged.clone(), log.clone()))
        })
        .collect();
    while acknowledged.load(Ordering::SeqCst) < ACKNOWLEDGED_BEFORE_SHUTDOWN {
        assert!(started.elapsed() < Duration::from_secs(60), "the load did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopping = Instant::now();
    server.shut_down().await;
    let shutdown_took = stopping.elapsed();
    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client).await.unwrap().unwrap();
    }
    let sent = log.lock().unwrap().clone();
    let acknowledged: Vec<&Sent> = sent.iter().filter(|s| s.acknowledged()).collect();
    let unanswered = sent.iter().filter(|s| s.answer.is_none()).count();
    let refused: Vec<&Sent> =
        sent.iter().filter(|s| s.answer.as_ref().is_some_and(|(status, _)| !status.is_success())).collect();
    assert!(refused.is_empty(), "commands were refused rather than finished or cut off: {refused:?}");

    // Stopped: what the projectors saved is at or behind the log's head, never ahead of it.
    let store = server.config().open_store(&[]).await.unwrap();
    let head = colloquy_infra::log::read_head(&store).await.unwrap();
    let checkpoints = all_checkpoints(&store).await.unwrap();
    store.close().await;
    let projections: Vec<&(String, i64)> =
        checkpoints.iter().filter(|(n, _)| n.starts_with("projection:")).collect();
    assert!(!projections.is_empty(), "the projectors saved checkpoints: {checkpoints:?}");
    for (name, position) in &projections {
        assert!(*position <= head, "{name} at {position} is past the head {head}");
    }
    // Each command appends one event, and a graceful stop answers every request it ran: the
    // store holds exactly the acknowledged commands.
    assert_eq!(head, acknowledged.len() as i64, "every applied command was answered");

    server.start_again().await;
    // Every acknowledged command's effect is there.
    for sent in &acknowledged {
        let path = match &sent.effect {
            Effect::Contact(id) => format!("/v1/contacts/{id}"),
            Effect::Conversation(id) => format!("/v1/conversations/{id}"),
            Effect::Message { conversation, message } => {
                format!("/v1/conversations/{conversation}/messages/{message}")
            }
        };
        let reply = server.get(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "acknowledged {sent:?} is gone: {:?}", reply.body);
    }
    // A retry with the same key replays an acknowledged command and runs one that never
    // arrived; none is left claimed but unfinished (409) and none runs twice.
    for sent in &sent {
        let (status, body, replayed) = post(&server.client, &server.base, &server.token, sent).await.unwrap();
        assert!(status.is_success(), "retrying {sent:?}: {status} {body}");
        if let Some((first_status, first_body)) = &sent.answer {
            assert!(replayed, "an acknowledged command is replayed, not run again: {sent:?}");
            assert_eq!((status, &body), (*first_status, first_body), "the same answer again");
        }
    }

    // Now every command ran exactly once: each conversation holds its messages once each.
    let mut messages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for sent in &sent {
        match &sent.effect {
            Effect::Conversation(id) => {
                messages.entry(id.clone()).or_default();
            }
            Effect::Message { conversation, message } => {
                messages.entry(conversation.clone()).or_default().insert(message.clone());
            }
            Effect::Contact(_) => {}
        }
    }
    let mut last_position = 0;
    for (conversation, expected) in &messages {
        let events = server.all_events("conversations", conversation).await;
        let types: Vec<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap_or("?")).collect();
        assert_eq!(events.len(), 1 + expected.len(), "{conversation}: {types:?}");
        let stored: BTreeSet<String> = events
            .iter()
            .filter(|e| e["event_type"] == "MessageAdded")
            .map(|e| e["data"]["message_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&stored, expected, "{conversation}: each message once");
        for event in &events {
            last_position = last_position.max(event["position"].as_i64().unwrap_or(0));
        }
    }

    // The read model catches up with every stored conversation and its messages.
    let mut listed: BTreeMap<String, u64> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => {
                format!("/v1/conversations?label=load&limit=100&min_position={last_position}&cursor={c}")
            }
            None => format!("/v1/conversations?label=load&limit=100&min_position={last_position}"),
        };
        let page = server.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        for row in page.body["data"].as_array().unwrap() {
            listed.insert(row["id"].as_str().unwrap().to_owned(), row["message_count"].as_u64().unwrap());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: BTreeMap<String, u64> =
        messages.iter().map(|(id, m)| (id.clone(), m.len() as u64)).collect();
    assert_eq!(listed, expected, "the read model holds every conversation with all its messages");
    let ready = wait_until_caught_up(&server).await;

    eprintln!(
        "shutdown on {backend:?}: {} commands sent, {} acknowledged, {unanswered} unanswered; graceful \
         stop took {:.2} s; at the stop the log head was {head} and the projectors were at {projections:?}; \
         after the restart {ready}; {:.1} s in all",
        sent.len(),
        acknowledged.len(),
        shutdown_took.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    server.stop().await;
}

/// Waits until `/readyz` reports every read model with lag 0, and returns its body.
async fn wait_until_caught_up(server: &TestServer) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let response = server.client.get(server.url("/readyz")).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        let projections: Vec<&Value> = body["checks"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| name.starts_with("projection:"))
            .map(|(_, check)| check)
            .collect();
        if status == StatusCode::OK && !projections.is_empty() && projections.iter().all(|c| c["lag"] == 0) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the read models did not catch up within 30 s: {last}");
}

on_both_stores!(acknowledged_commands_survive_a_graceful_shutdown_under_load);
