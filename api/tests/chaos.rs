//! Fault tolerance of the fan-out, with real processes: 10,000 commands from concurrent clients
//! while `colloquy relay` and `colloquy project` are SIGKILLed and restarted at random moments
//! and nats-server is restarted once. Afterwards the stream holds exactly one message per event,
//! per-aggregate order holds, and the read model equals a rebuild from the store.
//!
//! It lives in api/ because only this package's tests can run the `colloquy` binary it builds.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/tests/common/mod.rs"]
mod common;
mod worker;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};

use colloquy_api::Roles;
use colloquy_infra::checkpoints::read as read_checkpoint;
use colloquy_infra::relay::RELAY_CHECKPOINT;
use colloquy_infra::{Store, StoreLocation};
use colloquy_projections::conversation_list;
use common::{Backend, NatsServer, TestServer};
use worker::Worker;

const COMMANDS: usize = 10_000;
const CLIENTS: usize = 16;
const CONVERSATIONS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fan_out_survives_crashes_of_relay_projector_and_nats() {
    let mut nats = NatsServer::start().await;
    let nats_url = nats.url.clone();
    let server = Arc::new(
        TestServer::start_roles(
            Backend::Postgres,
            Roles { http: true, relay: false, projectors: false },
            |config| {
                config.nats_url = Some(nats_url.clone());
            },
        )
        .await,
    );
    let database_url = server.database_url().unwrap().to_owned();
    let env = vec![
        ("COLLOQUY_DATABASE_URL".to_owned(), database_url.clone()),
        ("COLLOQUY_NATS_URL".to_owned(), nats.url.clone()),
        ("COLLOQUY_DB_MAX_CONNECTIONS".to_owned(), "4".to_owned()),
        ("COLLOQUY_MASTER_KEY".to_owned(), common::master_key_text().to_owned()),
    ];
    let relay = Arc::new(std::sync::Mutex::new(Worker::start("relay", env.clone())));
    let projector = Arc::new(std::sync::Mutex::new(Worker::start("project", env.clone())));
    // A second instance of the same projector runs throughout: the two share the durable
    // consumer and the checkpoint, and must never apply an event twice.
    let second_projector = Worker::start("project", env.clone());

    let mut conversations = Vec::new();
    for _ in 0..CONVERSATIONS {
        conversations.push(server.conversation().await);
    }

    let loading = Arc::new(AtomicBool::new(true));
    let crashes = Arc::new(AtomicUsize::new(0));
    let chaos = {
        let (relay, projector, loading, crashes) =
            (relay.clone(), projector.clone(), loading.clone(), crashes.clone());
        tokio::spawn(async move {
            while loading.load(Ordering::SeqCst) {
                let pause = rand::thread_rng().gen_range(100..500);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let worker = if rand::thread_rng().gen_bool(0.5) { &relay } else { &projector };
                worker.lock().unwrap().crash_and_restart();
                crashes.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let issued = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (server, conversations, issued) = (server.clone(), conversations.clone(), issued.clone());
            tokio::spawn(async move {
                loop {
                    let n = issued.fetch_add(1, Ordering::SeqCst);
                    if n >= COMMANDS {
                        return;
                    }
                    let id = &conversations[(n * 7 + client) % conversations.len()];
                    let reply = match n % 10 {
                        0 => {
                            server
                                .post(
                                    &format!("/v1/conversations/{id}/labels"),
                                    json!({"add": [format!("l{}", n % 5)]}),
                                )
                                .await
                        }
                        1 => {
                            server
                                .post(
                                    &format!("/v1/conversations/{id}/assignment"),
                                    json!({"assignee_id": format!("agent-{}", n % 4)}),
                                )
                                .await
                        }
                        2..=5 => {
                            server
                                .post(
                                    &format!("/v1/conversations/{id}/messages"),
                                    json!({"sender": {"kind": "customer"}, "text": format!("c{n}")}),
                                )
                                .await
                        }
                        _ => server
                            .post(
                                &format!("/v1/conversations/{id}/messages"),
                                json!({"sender": {"kind": "user", "id": "agent-1"}, "text": format!("a{n}")}),
                            )
                            .await,
                    };
                    assert!(reply.status.is_success(), "command {n}: {} {:?}", reply.status, reply.body);
                }
            })
        })
        .collect();
    // Halfway through, NATS goes down and comes back.
    while issued.load(Ordering::SeqCst) < COMMANDS / 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nats.restart().await;
    for client in clients {
        client.await.unwrap();
    }
    loading.store(false, Ordering::SeqCst);
    chaos.await.unwrap();
    assert!(crashes.load(Ordering::SeqCst) >= 3, "the workers were killed several times");

    // Let the survivors finish: relay and projector reach the head of the log.
    let store = Store::open(&StoreLocation::Postgres { url: database_url.clone(), max_connections: 4 })
        .await
        .unwrap();
    let head = colloquy_infra::log::read_head(&store).await.unwrap();
    // Label and assignment commands that change nothing append nothing, so count the store.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.reads().postgres().unwrap())
        .await
        .unwrap();
    assert_eq!(head, stored, "every stored event is in the log");
    assert!(head > COMMANDS as i64 / 2, "head {head}");
    let checkpoint_name = format!("projection:{}", conversation_list::NAME);
    let mut caught_up = false;
    for _ in 0..600 {
        let relayed = read_checkpoint(&store, RELAY_CHECKPOINT).await.unwrap();
        let projected = read_checkpoint(&store, &checkpoint_name).await.unwrap();
        if relayed >= head && projected >= head {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(caught_up, "relay and projector reach the head after the chaos");

    // The stream: exactly one message per event, in log order, per-aggregate order intact.
    let client = async_nats::connect(&nats.url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("COLLOQUY_EVENTS").await.unwrap();
    let stored_messages = stream.info().await.unwrap().state.messages;
    assert_eq!(stored_messages, head as u64, "one stream message per event");
    let consumer =
        stream.create_consumer(async_nats::jetstream::consumer::pull::Config::default()).await.unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut positions = Vec::with_capacity(head as usize);
    let mut last_sequence: HashMap<String, i64> = HashMap::new();
    while (positions.len() as i64) < head {
        let message =
            tokio::time::timeout(Duration::from_secs(10), messages.next()).await.unwrap().unwrap().unwrap();
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
        positions.push(envelope["position"].as_i64().unwrap());
        let subject = envelope["subject"].as_str().unwrap().to_owned();
        let sequence = envelope["sequence"].as_i64().unwrap();
        let previous = last_sequence.insert(subject.clone(), sequence).unwrap_or(0);
        assert_eq!(sequence, previous + 1, "{subject}: per-aggregate order");
        message.ack().await.unwrap();
    }
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());

    // The read model equals a rebuild from the store.
    let projected = conversation_list::dump(&store).await.unwrap();
    assert_eq!(projected.len(), CONVERSATIONS);
    projector.lock().unwrap().kill();
    drop(second_projector);
    let rebuilt = Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .args(["projections", "rebuild", conversation_list::NAME])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    assert!(String::from_utf8_lossy(&rebuilt.stdout).contains("events/s"));
    assert_eq!(
        conversation_list::dump(&store).await.unwrap(),
        projected,
        "the live read model equals a rebuild"
    );

    let status = Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .args(["projections", "status"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    let line = status.lines().find(|l| l.starts_with(&checkpoint_name)).unwrap().to_owned();
    assert!(line.trim_end().ends_with(" 0"), "lag 0 after the load: {status}");

    let list = server.get("/v1/conversations?limit=100").await;
    assert_eq!(list.status, StatusCode::OK);
    store.close().await;
    drop(relay);
    drop(projector);
    Arc::try_unwrap(server).ok().unwrap().stop().await;
}
