//! The global log: positions strictly increase in the order a tailer sees commits, and a tailer
//! that reads "after P" while many writers commit concurrently never misses an event.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use colloquy_infra::Store;
use cqrs_es::persist::{PersistenceError, SerializedEvent};
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use crate::common::{default_tenant, deleted_event, Backend, TestServer};

async fn a_tailer_misses_nothing_while_many_writers_commit(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let mut conversations = Vec::new();
    for _ in 0..8 {
        conversations.push(server.conversation().await);
    }
    let done = Arc::new(AtomicBool::new(false));
    let tailer = {
        let server = server.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen: Vec<Value> = Vec::new();
            let mut after = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = server.get(&format!("/v1/events?after={after}&limit=1000")).await;
                assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
                let data = page.body["data"].as_array().unwrap().clone();
                after = page.body["last_position"].as_i64().unwrap();
                let empty = data.is_empty();
                seen.extend(data);
                if finished && empty {
                    return seen;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let server = server.clone();
            let conversations = conversations.clone();
            tokio::spawn(async move {
                for n in 0..25 {
                    let id = &conversations[(writer + n) % conversations.len()];
                    let reply = server
                        .post(
                            &format!("/v1/conversations/{id}/messages"),
                            json!({"sender": {"kind": "customer"}, "text": format!("w{writer} n{n}")}),
                        )
                        .await;
                    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
                    assert!(
                        reply.headers.contains_key("colloquy-position"),
                        "every command answers its position"
                    );
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    // Every write was acknowledged with its position, so the log has all of them by now.
    done.store(true, Ordering::SeqCst);
    let seen = tailer.await.unwrap();

    let positions: Vec<i64> = seen.iter().map(|e| e["position"].as_i64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[1] == w[0] + 1), "positions are gap-free and increasing");
    assert_eq!(positions.first(), Some(&1));
    let tailed: HashSet<(String, i64)> = seen
        .iter()
        .map(|e| (e["aggregate_id"].as_str().unwrap().to_owned(), e["sequence"].as_i64().unwrap()))
        .collect();
    assert_eq!(tailed.len(), seen.len(), "no event twice");
    let mut stored = HashSet::new();
    for id in &conversations {
        for event in server.all_events("conversations", id).await {
            stored.insert((id.clone(), event["sequence"].as_i64().unwrap()));
        }
    }
    assert_eq!(stored.len(), 8 + 16 * 25);
    assert!(stored.is_subset(&tailed), "the tailer saw every conversation event");
    // Per aggregate, log order is stream order.
    for id in &conversations {
        let sequences: Vec<i64> = seen
            .iter()
            .filter(|e| e["aggregate_id"] == id.as_str())
            .map(|e| e["sequence"].as_i64().unwrap())
            .collect();
        assert!(sequences.windows(2).all(|w| w[1] == w[0] + 1), "{id}: {sequences:?}");
    }
    Arc::try_unwrap(server).ok().unwrap().stop().await;
}

async fn a_commands_position_names_its_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let reply = server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "where am I"}),
        )
        .await;
    let position: i64 = reply.headers["colloquy-position"].to_str().unwrap().parse().unwrap();
    let page = server.get(&format!("/v1/events?after={}&limit=1", position - 1)).await;
    let event = &page.body["data"][0];
    assert_eq!(event["position"], position);
    assert_eq!(event["event_type"], "MessageAdded");
    assert_eq!(event["data"]["content"]["text"], "where am I");
    server.stop().await;
}

/// A read that carries only the tenant of each event's metadata (what most projections read)
/// returns the same events as a full read, each with `{"tenant_id": ...}` for its metadata.
async fn a_read_with_only_the_tenant_returns_the_same_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    for text in ["one", "two"] {
        let path = format!("/v1/conversations/{id}/messages");
        let reply = server.post(&path, json!({"sender": {"kind": "customer"}, "text": text})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }
    let store = server.config().open_store(&[]).await.unwrap();
    let log = colloquy_infra::GlobalLog::start(store.clone()).await.unwrap();
    let full = log.read(0, 100, None).await.unwrap();
    let slim = log.read_with(0, 100, None, colloquy_infra::event::Metadata::TenantOnly).await.unwrap();
    assert!(full.len() >= 4, "a contact, a conversation, two messages: {}", full.len());
    assert_eq!(slim.len(), full.len());
    for (slim, full) in slim.iter().zip(&full) {
        let key = |e: &colloquy_infra::StoredEvent| {
            (e.position, e.aggregate_type.clone(), e.aggregate_id.clone(), e.sequence, e.event_type.clone())
        };
        assert_eq!(key(slim), key(full));
        assert_eq!(slim.payload.to_value(), full.payload.to_value());
        let tenant = full.metadata.to_value()["tenant_id"].clone();
        assert!(tenant.is_string(), "{}", full.metadata.text());
        assert!(full.metadata.to_value()["event_id"].is_string(), "{}", full.metadata.text());
        assert_eq!(slim.metadata.to_value(), json!({"tenant_id": tenant}));
    }
    store.close().await;
    server.stop().await;
}

/// A payload reads back from the log as the very text the writer serialized (PostgreSQL keeps
/// it as `json`, not `jsonb`, which would reorder its keys and respace it): what a reader hashes
/// is what was written.
async fn a_payload_reads_back_as_the_text_written(backend: Backend) {
    let server = TestServer::start(backend).await;
    let store = server.config().open_store(&[]).await.unwrap();
    let id = Uuid::now_v7().to_string();
    let mut event = deleted_event(&id, 1, "exact");
    // Keys whose sorted order is not `jsonb`'s (shorter keys first), a nested object, an
    // escaped character and a non-ASCII one; `printf` directives and escaped control
    // characters (SQLite's page query writes each event with `printf`).
    event.payload = json!({"ConversationDeleted": {"deleted_at": "2026-11-29T00:00:00Z",
                                                   "note": {"zz": 1.5, "a\"b": "café ☕",
                                                            "fmt": "100%s %d\\n\t\u{1}]},"}}});
    let written = serde_json::to_string(&event.payload).unwrap();
    let metadata_written = serde_json::to_string(&event.metadata).unwrap();
    let (payload, metadata) = (event.payload.clone(), event.metadata.clone());
    let position = store.append(vec![event]).await.unwrap();

    // The aggregate's stream (read as one row on SQLite, as a page of the log is) gives the
    // same values, whole or after a sequence.
    type Conversation = colloquy_domain::Conversation;
    let whole = store.load::<Conversation>(&default_tenant(), &id).await.unwrap();
    let after = store.load_after::<Conversation>(&default_tenant(), &id, 0).await.unwrap();
    for stream in [&whole, &after] {
        assert_eq!(stream.len(), 1);
        assert_eq!((stream[0].aggregate_id.as_str(), stream[0].sequence), (id.as_str(), 1));
        assert_eq!(
            (stream[0].payload.to_value(), stream[0].metadata.to_value()),
            (payload.clone(), metadata.clone())
        );
    }
    assert!(store.load_after::<Conversation>(&default_tenant(), &id, 1).await.unwrap().is_empty());
    // The store stays one that postgres-es's and sqlite-es's own repositories read the same.
    {
        use cqrs_es::persist::PersistedEventRepository;
        let theirs = match store.reads() {
            colloquy_infra::store::Reads::Postgres(pool) => {
                postgres_es::PostgresEventRepository::new(pool.clone()).get_events::<Conversation>(&id).await
            }
            colloquy_infra::store::Reads::Sqlite(pool) => {
                sqlite_es::SqliteEventRepository::new(pool.clone()).get_events::<Conversation>(&id).await
            }
        };
        let as_theirs = |e: &colloquy_infra::StoredEvent| {
            let sequence = usize::try_from(e.sequence).unwrap();
            (
                e.aggregate_id.clone(),
                sequence,
                e.event_type.clone(),
                e.payload.to_value(),
                e.metadata.to_value(),
            )
        };
        let theirs: Vec<_> = theirs
            .unwrap()
            .into_iter()
            .map(|e| (e.aggregate_id, e.sequence, e.event_type, e.payload, e.metadata))
            .collect();
        assert_eq!(theirs, whole.iter().map(as_theirs).collect::<Vec<_>>());
    }

    let log = colloquy_infra::GlobalLog::start(store.clone()).await.unwrap();
    let read = log.read(position - 1, 1, None).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].aggregate_id, id);
    assert_eq!(read[0].payload.text(), written);
    // SQLite keeps the metadata as text too (PostgreSQL as `jsonb`, so only its value holds).
    if store.reads().postgres().is_none() {
        assert_eq!(read[0].metadata.text(), metadata_written);
    }
    assert_eq!(
        read[0].metadata.to_value(),
        serde_json::from_str::<serde_json::Value>(&metadata_written).unwrap()
    );
    store.close().await;
    server.stop().await;
}

/// Appends queued together share one commit; a sequence taken by another process fails only the
/// command that holds it, and its batch-mates are appended with their own positions.
async fn a_conflict_in_a_shared_commit_fails_only_its_own_command(backend: Backend) {
    let server = TestServer::start(backend).await;
    let location = server.config().store_location();
    let (ours, theirs) = (Store::open(&location).await.unwrap(), Store::open(&location).await.unwrap());
    let contested = Uuid::now_v7().to_string();
    theirs.append(vec![deleted_event(&contested, 1, "theirs")]).await.unwrap();

    let mut appends = Vec::new();
    for n in 0..24 {
        let ours = ours.clone();
        let id = if n % 6 == 0 { contested.clone() } else { Uuid::now_v7().to_string() };
        appends.push(tokio::spawn(async move {
            let outcome =
                ours.append(vec![deleted_event(&id, 1, "ours"), deleted_event(&id, 2, "ours")]).await;
            (id, outcome)
        }));
    }
    let mut positions = HashSet::new();
    for append in appends {
        let (id, outcome) = append.await.unwrap();
        if id == contested {
            assert!(matches!(outcome, Err(PersistenceError::OptimisticLockError)), "{outcome:?}");
        } else {
            let position = outcome.unwrap();
            assert!(positions.insert(position), "position {position} handed out twice");
            let page = server.get(&format!("/v1/events?after={}&limit=2", position - 2)).await;
            let stream: Vec<(&str, i64)> = page.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["aggregate_id"].as_str().unwrap(), e["sequence"].as_i64().unwrap()))
                .collect();
            assert_eq!(stream, vec![(id.as_str(), 1), (id.as_str(), 2)], "the two events before {position}");
        }
    }
    assert_eq!(positions.len(), 20);
    let contested_events =
        ours.load_after::<colloquy_domain::Conversation>(&default_tenant(), &contested, 0).await.unwrap();
    assert_eq!(contested_events.len(), 1, "only the other process's event");
    assert_eq!(contested_events[0].metadata.to_value()["actor_id"], "theirs");
    server.stop().await;
}

/// An append larger than one insert statement (SQLite writes 500 rows a statement, all in one
/// transaction) that conflicts in its last statement writes none of its events, and the writer
/// appends normally afterwards: the failed transaction was rolled back, not left open.
async fn a_conflict_late_in_a_large_append_writes_none_of_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let location = server.config().store_location();
    let (ours, theirs) = (Store::open(&location).await.unwrap(), Store::open(&location).await.unwrap());
    let contested = Uuid::now_v7().to_string();
    theirs.append(vec![deleted_event(&contested, 1, "theirs")]).await.unwrap();
    let head =
        ours.load_after::<colloquy_domain::Conversation>(&default_tenant(), &contested, 0).await.unwrap();
    assert_eq!(head.len(), 1);

    let fresh = Uuid::now_v7().to_string();
    let mut events: Vec<SerializedEvent> = (1..=700).map(|n| deleted_event(&fresh, n, "ours")).collect();
    events.push(deleted_event(&contested, 1, "ours"));
    let outcome = ours.append(events).await;
    assert!(matches!(outcome, Err(PersistenceError::OptimisticLockError)), "{outcome:?}");
    let written =
        ours.load_after::<colloquy_domain::Conversation>(&default_tenant(), &fresh, 0).await.unwrap();
    assert!(written.is_empty(), "{} events of the failed append were kept", written.len());

    let position = ours.append(vec![deleted_event(&fresh, 1, "ours")]).await.unwrap();
    let after = ours.append(vec![deleted_event(&fresh, 2, "ours")]).await.unwrap();
    assert_eq!(after, position + 1, "the next appends commit, one after the other");
    let written =
        ours.load_after::<colloquy_domain::Conversation>(&default_tenant(), &fresh, 0).await.unwrap();
    assert_eq!(written.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2]);
    ours.close().await;
    theirs.close().await;
    server.stop().await;
}

/// Every page read (of the log, of a stream, of an aggregate's load) is bounded by bytes as
/// well as by count: a page ends at the first event past the budget, always holds one event,
/// and reading on from it reaches every event, in order. (SQLite built each page as one string,
/// which failed for good past 1 GB: 2,000 maximal messages in a page.)
async fn pages_are_bounded_by_bytes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let text = "x".repeat(10_000);
    for n in 0..6 {
        server.customer_message(&id, &format!("{n} {text}")).await;
    }
    let whole = server.config().open_store(&[]).await.unwrap();
    // About two messages' worth.
    let store = whole.clone().with_page_bytes(25_000);
    type Conversation = colloquy_domain::Conversation;

    let all = whole.load::<Conversation>(&default_tenant(), &id).await.unwrap();
    assert_eq!(all.len(), 7, "opened and six messages");
    let first = store.load_page::<Conversation>(&default_tenant(), &id, 0).await.unwrap();
    assert!(first.more, "a page that reached the budget says more may follow");
    assert!((2..=4).contains(&first.events.len()), "{} events in a 25,000-byte page", first.events.len());
    assert_eq!(
        store.load::<Conversation>(&default_tenant(), &id).await.unwrap(),
        all,
        "read on page by page, the same events"
    );
    let last = store.load_page::<Conversation>(&default_tenant(), &id, 6).await.unwrap();
    assert_eq!((last.events.len(), last.more), (1, false));
    // An event larger than the whole budget still comes, alone.
    let tiny = whole.clone().with_page_bytes(1);
    let one = tiny.load_page::<Conversation>(&default_tenant(), &id, 1).await.unwrap();
    assert_eq!((one.events.len(), one.events[0].sequence, one.more), (1, 2, true));

    // A repository over such a store loads the conversation whole, a page at a time.
    let repository = colloquy_infra::Repository::<Conversation>::new(
        store.clone(),
        colloquy_infra::CacheLimits { aggregates: 10, bytes: 1 << 20, snapshot_every: 0 },
    );
    let tenant = colloquy_domain::TenantId::parse("default").unwrap();
    let messages = repository.read(&tenant, &id, |c, version| (c.messages.len(), version)).await.unwrap();
    assert_eq!(messages, Some((6, 7)));

    // The log: a page holds fewer than asked, and reading on misses nothing.
    let log = colloquy_infra::GlobalLog::start(store.clone()).await.unwrap();
    let page = log.read(0, 1_000, None).await.unwrap();
    assert!(page.len() < 7, "{} events in a 25,000-byte page of the log", page.len());
    let (mut after, mut read) = (0, Vec::new());
    loop {
        let page = log.read(after, 1_000, None).await.unwrap();
        let Some(last) = page.last().and_then(|e| e.position) else { break };
        after = last;
        read.extend(page);
    }
    let sequences: Vec<i64> = read.iter().filter(|e| e.aggregate_id == id).map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=7).collect::<Vec<_>>());
    let positions: Vec<i64> = read.iter().filter_map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[1] == w[0] + 1), "gap-free: {positions:?}");

    // A short tail is read whole, and so is a long stream of small events (past the first
    // read's 32 events, the budgeted read takes over).
    let chatty = server.conversation().await;
    for n in 0..40 {
        server.customer_message(&chatty, &format!("message {n}")).await;
    }
    let page = whole.load_page::<Conversation>(&default_tenant(), &chatty, 0).await.unwrap();
    let sequences: Vec<i64> = page.events.iter().map(|e| e.sequence).collect();
    assert_eq!((sequences, page.more), ((1..=41).collect::<Vec<_>>(), false));
    let tail = whole.load_page::<Conversation>(&default_tenant(), &chatty, 38).await.unwrap();
    let sequences: Vec<i64> = tail.events.iter().map(|e| e.sequence).collect();
    assert_eq!((sequences, tail.more), (vec![39, 40, 41], false));
    let past = whole.load_page::<Conversation>(&default_tenant(), &chatty, 41).await.unwrap();
    assert_eq!((past.events.len(), past.more), (0, false));

    // A stream page, as GET .../events serves it.
    let stream = store.stream_page(&tenant, "conversation", &id, 0, 100).await.unwrap();
    assert!((2..=4).contains(&stream.len()), "{} events in a 25,000-byte stream page", stream.len());
    assert_eq!(
        stream.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=stream.len() as i64).collect::<Vec<_>>()
    );

    store.close().await;
    server.stop().await;
}

on_both_stores!(
    pages_are_bounded_by_bytes,
    a_read_with_only_the_tenant_returns_the_same_events,
    a_payload_reads_back_as_the_text_written,
    a_tailer_misses_nothing_while_many_writers_commit,
    a_commands_position_names_its_event,
    a_conflict_in_a_shared_commit_fails_only_its_own_command,
    a_conflict_late_in_a_large_append_writes_none_of_it
);

/// Positions are given at commit, so an open transaction elsewhere in the cluster (which held the
/// old sequencer's horizon back) delays neither a command's position nor the read models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_elsewhere_holds_back_no_position() {
    let server = TestServer::start(Backend::Postgres).await;
    let id = server.conversation().await;
    let mut idle = PgConnection::connect(server.database_url().unwrap()).await.unwrap();
    idle.execute("BEGIN").await.unwrap();
    // Takes a transaction id and keeps it: pg_snapshot_xmin stays at or below it meanwhile.
    idle.execute("SELECT pg_current_xact_id()").await.unwrap();

    for n in 0..3 {
        let reply = server
            .post(
                &format!("/v1/conversations/{id}/messages"),
                json!({"sender": {"kind": "customer"}, "text": format!("while held {n}")}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        let position: i64 = reply.headers["colloquy-position"].to_str().unwrap().parse().unwrap();
        let listed = server.get(&format!("/v1/conversations?min_position={position}")).await;
        assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
        let row = listed.body["data"].as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).cloned();
        assert_eq!(row.unwrap()["last_message"]["preview"], format!("while held {n}"));
    }
    idle.execute("ROLLBACK").await.unwrap();
    server.stop().await;
}
