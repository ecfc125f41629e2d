//! Fan-out: the relay publishes every committed event to JetStream (or the in-process bus), the
//! projector keeps the conversation list, and a query with `min_position` sees the writer's own
//! change.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{default_tenant, deleted_event, eventually, Backend, NatsServer, TestServer};

async fn read_your_writes_through_the_conversation_list(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    for n in 0..20 {
        let reply = server
            .post(
                &format!("/v1/conversations/{id}/messages"),
                json!({"sender": {"kind": "customer"}, "text": format!("note {n}")}),
            )
            .await;
        let position = reply.headers["colloquy-position"].to_str().unwrap().to_owned();
        let list = server.get(&format!("/v1/conversations?min_position={position}")).await;
        assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
        let row =
            list.body["data"].as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).unwrap().clone();
        assert_eq!(row["last_message"]["preview"], format!("note {n}"), "the list already shows the write");
        assert_eq!(row["message_count"], n + 1);
    }
    server.stop().await;
}

/// A position in the log that the list does not reach in time (no projector runs here) is a 503
/// to retry; one past the log's head is no write at all, and a 400 at once, holding no place.
async fn a_position_the_read_model_cannot_reach_in_time_answers_503(backend: Backend) {
    let roles = colloquy_api::Roles { http: true, relay: true, projectors: false };
    let timeout = Duration::from_secs(3);
    let server = TestServer::start_roles(backend, roles, |config| {
        config.min_position_timeout_ms = timeout.as_millis() as u64;
    })
    .await;
    let position = server.customer_message(&server.conversation().await, "hello").await;

    let started = Instant::now();
    let past = server.get(&format!("/v1/conversations?min_position={}", position + 1_000_000)).await;
    let detail = past.assert_problem(StatusCode::BAD_REQUEST);
    assert!(detail.contains("min_position") && detail.contains("head"), "{detail}");
    assert!(started.elapsed() < timeout, "answered without waiting for the read model");

    let list = server.get(&format!("/v1/conversations?min_position={position}")).await;
    list.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(list.headers.contains_key("retry-after"));
    server.stop().await;
}

async fn the_list_filters_by_status_and_pages_without_repeats(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut ids = Vec::new();
    for n in 0..7 {
        let id = server.conversation().await;
        if n % 2 == 0 {
            server.post(&format!("/v1/conversations/{id}/status"), json!({"status": "pending"})).await;
        }
        ids.push(id);
    }
    let last = server.post(&format!("/v1/conversations/{}/labels", ids[0]), json!({"add": ["x"]})).await;
    let position = last.headers["colloquy-position"].to_str().unwrap().to_owned();
    let pending = server.get(&format!("/v1/conversations?status=pending&min_position={position}")).await;
    assert_eq!(pending.body["data"].as_array().unwrap().len(), 4);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/conversations?limit=3&cursor={c}"),
            None => "/v1/conversations?limit=3".to_owned(),
        };
        let page = server.get(&path).await;
        seen.extend(
            page.body["data"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted_seen, expected, "every conversation once across pages");
    server.get("/v1/conversations?status=archived").await.assert_problem(StatusCode::BAD_REQUEST);
    server.stop().await;
}

/// A projection that ignores a run of events (group_members and conversation messages) still
/// reaches every position they take, for readers here at once and in the store soon after, so
/// its lag drops to zero without a transaction per batch.
async fn a_projection_passes_over_the_events_it_ignores(backend: Backend) {
    let server = TestServer::start(backend).await;
    let contact = server.contact().await;
    let id = server.conversation().await;
    let mut position = 0;
    for n in 0..20 {
        let reply = server
            .post(
                &format!("/v1/conversations/{id}/messages"),
                json!({"sender": {"kind": "customer"}, "text": format!("message {n}")}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        position = reply.headers["colloquy-position"].to_str().unwrap().parse().unwrap();
        // Read your writes through a read model that ignores these events.
        let groups = server.get(&format!("/v1/contacts/{contact}/groups?min_position={position}")).await;
        assert_eq!(groups.status, StatusCode::OK, "{:?}", groups.body);
        assert_eq!(groups.body["data"], json!([]));
    }
    let store = server.config().open_store(&[]).await.unwrap();
    let mut stored = Vec::new();
    for _ in 0..100 {
        stored.clear();
        for name in ["group_members", "group_conversations", "conversation_list"] {
            let checkpoint = format!("projection:{name}");
            stored.push(colloquy_infra::checkpoints::read(&store, &checkpoint).await.unwrap());
        }
        if stored.iter().all(|c| *c == position) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored, vec![position; 3], "stored checkpoints reach the head");
    store.close().await;
    server.stop().await;
}

/// A rebuild clears the conversation list and replays the whole log into it (here with the
/// server stopped, as `colloquy projections rebuild` is run): a list that went wrong is given
/// back as the live projector built it, row for row. It holds rows across pages and commits
/// them now and then; however its pages and commits fall (down to an event each), the rows
/// and counters come out the same, a contact renamed in one page included.
async fn a_rebuild_gives_back_the_list_the_live_projector_built(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(server.conversation().await);
    }
    let mut position = 0i64;
    let mut note = |reply: &common::Reply| {
        assert!(reply.status.is_success(), "{:?}", reply.body);
        position = reply.headers["colloquy-position"].to_str().unwrap().parse().unwrap();
    };
    let renamed = server.get(&format!("/v1/conversations/{}", ids[0])).await.body["contact_id"].clone();
    let renamed = renamed.as_str().unwrap().to_owned();
    // Messages interleaved over the conversations, from both sides, with a contact renamed
    // halfway, then a status and a label.
    for round in 0..5 {
        if round == 2 {
            let path = format!("/v1/contacts/{renamed}");
            note(&server.patch(&path, json!({"first_name": "Renamed", "last_name": null})).await);
        }
        for (n, id) in ids.iter().enumerate() {
            let sender = if (round + n) % 2 == 0 {
                json!({"kind": "customer"})
            } else {
                json!({"kind": "user", "id": "agent-1"})
            };
            let path = format!("/v1/conversations/{id}/messages");
            note(
                &server.post(&path, json!({"sender": sender, "text": format!("round {round} in {n}")})).await,
            );
        }
    }
    note(&server.post(&format!("/v1/conversations/{}/status", ids[1]), json!({"status": "pending"})).await);
    note(&server.post(&format!("/v1/conversations/{}/labels", ids[2]), json!({"add": ["vip"]})).await);
    let list = format!("/v1/conversations?min_position={position}&limit=100");
    let built = server.get(&list).await;
    assert_eq!(built.status, StatusCode::OK, "{:?}", built.body);
    assert_eq!(built.body["data"].as_array().unwrap().len(), 4);
    let row =
        built.body["data"].as_array().unwrap().iter().find(|r| r["id"] == ids[0].as_str()).unwrap().clone();
    assert_eq!(row["contact"]["name"], "Renamed", "{row}");
    let counts = format!("/v1/conversations/counts?status=open,pending&min_position={position}");
    let counted = server.get(&counts).await;
    assert_eq!(counted.status, StatusCode::OK, "{:?}", counted.body);
    server.shut_down().await;

    let store = server.config().open_store(&[]).await.unwrap();
    // Rows gone wrong, and a counter the log never produced: only clearing removes that one.
    let spoil = [
        "UPDATE conversation_list SET message_count = 0, subject = 'spoiled'",
        "INSERT INTO conversation_counts (tenant_id, status, assignee_id, count)
         SELECT tenant_id, 'open', 'nobody', 7 FROM conversation_list LIMIT 1",
    ];
    for sql in spoil {
        let spoiled = colloquy_infra::on_pool!(&store, |pool| {
            sqlx::query(sql).execute(pool).await.unwrap().rows_affected()
        });
        assert!(spoiled > 0, "{sql}");
    }
    let indexes_before = list_indexes(&store).await;
    assert!(indexes_before.len() >= 10, "{indexes_before:?}");
    let log = colloquy_infra::GlobalLog::start(store.clone()).await.unwrap();
    let projection = colloquy_projections::by_name("conversation_list").unwrap();
    let mut progress = Vec::new();
    let rebuilt = colloquy_projections::Projector::new(log.clone(), projection.clone())
        .rebuild(|checkpoint| progress.push(checkpoint))
        .await
        .unwrap();
    assert_eq!(rebuilt, position, "the rebuild reaches the head");
    assert_eq!(progress.last(), Some(&position), "{progress:?}");
    // The indexes it dropped while writing the rows are built again, as they were.
    assert_eq!(list_indexes(&store).await, indexes_before);
    assert_eq!(deferred_notes(&store).await, 0);
    let counters = "SELECT tenant_id || ' ' || status || ' ' || assignee_id || ' ' || count
                      FROM conversation_counts ORDER BY 1";
    let read_counters = || async {
        colloquy_infra::on_pool!(&store, |pool| {
            sqlx::query_scalar::<_, String>(counters).fetch_all(pool).await.unwrap()
        })
    };
    let rows = colloquy_projections::conversation_list::dump(&store).await.unwrap();
    let counted_rows = read_counters().await;
    // Pages of an event or a few; commits when two rows are held, or every few events.
    for (page, held, events) in [(1, 1_000, 2), (1, 1_000, 3), (2, 2, 1_000), (3, 1_000, 5), (1, 1, 1)] {
        let limits = colloquy_projections::RebuildLimits { page, held, events };
        let mut commits = Vec::new();
        let rebuilt = colloquy_projections::Projector::new(log.clone(), projection.clone())
            .with_rebuild_limits(limits)
            .rebuild(|checkpoint| commits.push(checkpoint))
            .await
            .unwrap();
        assert_eq!(rebuilt, position, "{limits:?}");
        assert!(commits.len() > 2, "{limits:?} commits now and then: {commits:?}");
        let again = colloquy_projections::conversation_list::dump(&store).await.unwrap();
        assert_eq!(again, rows, "{limits:?}");
        assert_eq!(read_counters().await, counted_rows, "{limits:?}");
    }
    // Each commit is written while the next one folds, so a commit can find the checkpoint
    // moved by another instance only when it is written: here a second instance catches up
    // from the first commit of a rebuild on, while the rebuild goes on an event per commit.
    // Whichever commits first, the other drops what it folded and reads on from there.
    for _ in 0..3 {
        let (first_commit, committed) = tokio::sync::oneshot::channel::<()>();
        let mut first_commit = Some(first_commit);
        let limits = colloquy_projections::RebuildLimits { page: 1, held: 1, events: 1 };
        let rebuilder =
            colloquy_projections::Projector::new(log.clone(), projection.clone()).with_rebuild_limits(limits);
        let rebuilding = rebuilder.rebuild(|_| {
            if let Some(first) = first_commit.take() {
                let _ = first.send(());
            }
        });
        let other = colloquy_projections::Projector::new(log.clone(), projection.clone());
        let catching_up = async {
            committed.await.unwrap();
            other.catch_up().await
        };
        let (rebuilt, caught_up) = tokio::join!(rebuilding, catching_up);
        assert_eq!(rebuilt.unwrap(), position);
        assert_eq!(caught_up.unwrap(), position);
        let again = colloquy_projections::conversation_list::dump(&store).await.unwrap();
        assert_eq!(again, rows, "a rebuild and a catch-up at once");
        assert_eq!(read_counters().await, counted_rows, "a rebuild and a catch-up at once");
    }
    assert_eq!(list_indexes(&store).await, indexes_before);
    // A rebuild stopped before its end leaves the indexes it dropped noted: the next start
    // builds them.
    let stopping = colloquy_projections::Projector::new(log.clone(), projection.clone())
        .with_rebuild_limits(colloquy_projections::RebuildLimits { page: 1, held: 1, events: 1 });
    let stopped =
        tokio::spawn(async move { stopping.rebuild(|_| panic!("stopped at its first commit")).await }).await;
    assert!(stopped.unwrap_err().is_panic());
    let deferrable = projection.deferred_indexes();
    let kept: Vec<(String, String)> =
        indexes_before.iter().filter(|(name, _)| !deferrable.contains(&name.as_str())).cloned().collect();
    assert!(kept.len() >= 2 && indexes_before.len() - kept.len() >= 8, "{kept:?}");
    assert_eq!(list_indexes(&store).await, kept);
    assert_eq!(deferred_notes(&store).await as usize, indexes_before.len() - kept.len());
    store.close().await;

    server.start_again().await;
    let store = server.config().open_store(&[]).await.unwrap();
    assert_eq!(list_indexes(&store).await, indexes_before, "built again at the start");
    assert_eq!(deferred_notes(&store).await, 0);
    store.close().await;
    let rebuilt = server.get(&list).await;
    assert_eq!(rebuilt.status, StatusCode::OK, "{:?}", rebuilt.body);
    assert_eq!(rebuilt.body["data"], built.body["data"]);
    // The stray counter is gone only if the rebuild cleared the tables before replaying.
    let recounted = server.get(&counts).await;
    assert_eq!(recounted.body, counted.body);
    server.stop().await;
}

/// The conversation list's indexes and their definitions, by name.
async fn list_indexes(store: &colloquy_infra::Store) -> Vec<(String, String)> {
    if let Some(pool) = store.reads().postgres() {
        let sql = "SELECT indexname, indexdef FROM pg_indexes
                    WHERE schemaname = current_schema() AND tablename = 'conversation_list' ORDER BY indexname";
        sqlx::query_as(sql).fetch_all(pool).await.unwrap()
    } else {
        let pool = store.reads().sqlite().unwrap();
        let sql = "SELECT name, sql FROM read_models.sqlite_master
                    WHERE type = 'index' AND tbl_name = 'conversation_list' AND sql IS NOT NULL ORDER BY name";
        sqlx::query_as(sql).fetch_all(pool).await.unwrap()
    }
}

/// How many indexes a rebuild noted as dropped and not yet built again.
async fn deferred_notes(store: &colloquy_infra::Store) -> i64 {
    let sql = "SELECT count(*) FROM deferred_indexes";
    colloquy_infra::on_pool!(store, |pool| sqlx::query_scalar(sql).fetch_one(pool).await.unwrap())
}

/// `COLLOQUY_PROJECTION_LINGER_MS`: a projector fed by the in-process bus holds a batch back for
/// that long after its first event, then applies what gathered.
async fn a_projector_lets_a_batch_gather_for_the_configured_linger(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.projection_linger_ms = Some(4_000);
        config.min_position_timeout_ms = 100;
    })
    .await;
    let id = server.conversation().await;
    let reply = server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "hi"}),
        )
        .await;
    let position = reply.headers["colloquy-position"].to_str().unwrap().to_owned();
    let path = format!("/v1/conversations?min_position={position}");
    // The batch began with the contact, well under 4 s ago (also on a loaded machine).
    server.get(&path).await.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    let list = eventually(Duration::from_secs(15), "the list at the message's position", || async {
        let list = server.get(&path).await;
        (list.status == StatusCode::OK).then_some(list)
    })
    .await;
    let row = list.body["data"].as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).unwrap().clone();
    assert_eq!(row["last_message"]["preview"], "hi", "both events were applied, in one batch or two");
    assert_eq!(row["message_count"], 1);
    server.stop().await;
}

/// An event the list cannot apply stops its projector loudly: `/readyz` answers 503 naming the
/// projection, the checkpoint it is stopped at and the error, and `/metrics` counts the failures,
/// while the other read models and the commands go on.
async fn an_event_a_projection_cannot_apply_is_reported_not_skipped(backend: Backend) {
    let server = TestServer::start(backend).await;
    let before = server.customer_message(&server.conversation().await, "before").await;
    let listed = server.get(&format!("/v1/conversations?min_position={before}")).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let (id, position) = server.append_unreadable().await;

    let name = "projection:conversation_list";
    let check = common::eventually(Duration::from_secs(15), "/readyz reports the stopped list", || async {
        let ready = server.get("/readyz").await;
        (ready.status == StatusCode::SERVICE_UNAVAILABLE && ready.body["checks"][name]["status"] == "failing")
            .then_some(ready.body["checks"][name].clone())
    })
    .await;
    assert_eq!(check["position"].as_i64(), Some(position - 1), "{check:?}");
    let error = check["error"].as_str().unwrap();
    // The one decode error: the event's position, type and version, and its stream.
    let named = [format!("position {position}"), "MessageAdded 1.0".to_owned(), id.clone()];
    assert!(named.iter().all(|part| error.contains(part.as_str())), "{error}");
    assert!(check["attempts"].as_u64().unwrap() >= 1, "{check:?}");
    let failures =
        server.metric("colloquy_projection_failures_total{projection=\"conversation_list\"}").await;
    assert!(failures >= 1.0, "failures counted: {failures}");
    assert_eq!(server.metric("colloquy_projection_stalled{projection=\"conversation_list\"}").await, 1.0);
    assert_eq!(server.metric("colloquy_projection_stalled{projection=\"group_members\"}").await, 0.0);

    // The list stays where it was, and says so, rather than passing over the event.
    let waited = server.get(&format!("/v1/conversations?min_position={position}")).await;
    assert_eq!(waited.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", waited.body);
    let other = server.conversation().await;
    assert!(!other.is_empty(), "commands are still served");
}

/// A read model that trails the log and does not move is not ready, though no check of its own
/// fails and its lag is small: here its projector waits on a lock another session holds on its
/// table. Once the lock goes, it moves and is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_that_trails_without_moving_is_reported_stuck() {
    use sqlx::{Connection, Executor};
    let server = TestServer::start_with(Backend::Postgres, |config| config.ready_stuck_after_secs = 1).await;
    let id = server.conversation().await;
    let before = server.customer_message(&id, "before").await;
    assert_eq!(server.get(&format!("/v1/conversations?min_position={before}")).await.status, StatusCode::OK);
    assert_eq!(server.get("/readyz").await.status, StatusCode::OK);

    let mut locker = sqlx::PgConnection::connect(server.database_url().unwrap()).await.unwrap();
    locker.execute("BEGIN").await.unwrap();
    locker.execute("LOCK TABLE conversation_list IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let locked = server.customer_message(&id, "while locked").await;
    let name = "projection:conversation_list";
    let check = common::eventually(Duration::from_secs(15), "/readyz reports the list stuck", || async {
        let ready = server.get("/readyz").await;
        (ready.status == StatusCode::SERVICE_UNAVAILABLE && ready.body["checks"][name]["status"] == "stuck")
            .then_some(ready.body["checks"][name].clone())
    })
    .await;
    assert!(check["position"].as_i64().unwrap() < locked, "{check:?}");
    assert!(check["lag"].as_i64().unwrap() >= 1, "{check:?}");
    assert!(check["still_for_secs"].as_u64().unwrap() >= 1, "{check:?}");

    locker.execute("ROLLBACK").await.unwrap();
    common::eventually(Duration::from_secs(15), "ready once the list moves", || async {
        (server.get("/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
    server.stop().await;
}

/// `projections rebuild` run by another process while this one projects under load: the live
/// projector learns of the rebuild from the checkpoint's generation and goes on from the
/// rebuild's checkpoint, so the list ends equal to what a rebuild alone gives (before, the live
/// process saved its further checkpoint over the rebuild's, and the rebuild skipped the gap).
async fn a_rebuild_beside_a_live_projector_under_load_loses_nothing(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(server.conversation().await);
    }
    for (n, id) in ids.iter().enumerate() {
        server.customer_message(id, &format!("before {n}")).await;
    }
    let rebuild = |store: colloquy_infra::Store| async move {
        let log = colloquy_infra::GlobalLog::start(store).await.unwrap();
        let projection = colloquy_projections::by_name("conversation_list").unwrap();
        // Small commits, so the live projector gets in between them.
        let limits = colloquy_projections::RebuildLimits { page: 10, held: 5, events: 10 };
        colloquy_projections::Projector::new(log, projection)
            .with_rebuild_limits(limits)
            .rebuild(|_| {})
            .await
            .unwrap()
    };
    let elsewhere = server.config().open_store(&[]).await.unwrap();
    let load = async {
        let mut last = 0;
        for round in 0..20 {
            for id in &ids {
                last = server.customer_message(id, &format!("during {round}")).await;
            }
        }
        last
    };
    let (last, _) = tokio::join!(load, rebuild(elsewhere.clone()));
    let list = format!("/v1/conversations?min_position={last}&limit=100");
    let live = server.get(&list).await;
    assert_eq!(live.status, StatusCode::OK, "{:?}", live.body);
    for row in live.body["data"].as_array().unwrap() {
        assert_eq!(row["message_count"], 21, "{row}");
    }
    server.shut_down().await;
    rebuild(elsewhere).await;
    server.start_again().await;
    let rebuilt = server.get(&list).await;
    assert_eq!(rebuilt.status, StatusCode::OK, "{:?}", rebuilt.body);
    assert_eq!(rebuilt.body, live.body, "the list equals a rebuild of it");
    server.stop().await;
}

/// A JetStream stream belongs to the store whose relay made it: a fresh store pointed at it is
/// refused at start, loudly (before, it served commands and an inbox that stayed empty while
/// `/readyz` said ready), and a message that this store's relay did not publish never replaces
/// an event in the read model.
async fn a_stream_is_bound_to_its_store_and_takes_no_foreign_events(backend: Backend) {
    let nats = NatsServer::start().await;
    let server = TestServer::start_with(backend, |config| config.nats_url = Some(nats.url.clone())).await;
    let id = server.conversation().await;
    let position = server.customer_message(&id, "first").await;
    let list = server.get(&format!("/v1/conversations?min_position={position}")).await;
    assert_eq!(list.body["data"][0]["message_count"], 1, "{:?}", list.body);

    let jetstream = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let mut stream = jetstream.get_stream("COLLOQUY_EVENTS").await.unwrap();
    let info = stream.info().await.unwrap().clone();
    let description = info.config.description.clone().unwrap_or_default();
    let bound = description.strip_prefix(colloquy_infra::relay::STREAM_STORE_PREFIX).map(str::to_owned);
    assert!(bound.as_deref().is_some_and(|b| !b.is_empty()), "{description:?}");

    // Another store (new, empty) beside that stream does not start.
    let database = match backend {
        Backend::Postgres => Some(common::TestDatabase::create().await),
        Backend::Sqlite => None,
    };
    let data_dir = tempfile::tempdir().unwrap();
    let mut other = common::config_for(
        data_dir.path().to_path_buf(),
        database.as_ref().map(|d| d.url.clone()),
        "cq_test_other_store_token_0123456789",
    );
    other.nats_url = Some(nats.url.clone());
    let refused = colloquy_api::process::start(&other, colloquy_api::Roles::ALL).await;
    let Err(error) = refused else { panic!("a store beside another store's stream must not start") };
    let error = format!("{error:#}");
    assert!(
        error.contains("holds the events of store") && error.contains(bound.as_deref().unwrap()),
        "{error}"
    );

    // A forged envelope (no store header) at the next position, deleting the conversation.
    let last = stream.get_raw_message(info.state.last_sequence).await.unwrap();
    let mut forged: Value = serde_json::from_slice(&last.payload).unwrap();
    forged["id"] = json!(uuid::Uuid::now_v7());
    forged["position"] = json!(position + 1);
    forged["sequence"] = json!(forged["sequence"].as_i64().unwrap() + 1);
    forged["type"] = json!("ConversationDeleted");
    forged["eventtype"] = json!("ConversationDeleted");
    forged["data"] = json!({"deleted_at": "2026-12-01T00:00:00Z"});
    let subject = last.subject.to_string();
    jetstream.publish(subject, serde_json::to_vec(&forged).unwrap().into()).await.unwrap().await.unwrap();
    let real = server.customer_message(&id, "second").await;
    assert_eq!(real, position + 1, "the real event has the forged one's position");
    let list = server.get(&format!("/v1/conversations?min_position={real}")).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    assert_eq!(list.body["data"][0]["id"], id.as_str(), "{:?}", list.body);
    assert_eq!(list.body["data"][0]["message_count"], 2, "{:?}", list.body);
    assert_eq!(list.body["data"][0]["deleted"], false, "{:?}", list.body);
    server.stop().await;
}

on_both_stores!(
    read_your_writes_through_the_conversation_list,
    a_projector_lets_a_batch_gather_for_the_configured_linger,
    a_position_the_read_model_cannot_reach_in_time_answers_503,
    the_list_filters_by_status_and_pages_without_repeats,
    a_projection_passes_over_the_events_it_ignores,
    a_rebuild_gives_back_the_list_the_live_projector_built,
    waiters_read_a_checkpoint_another_instance_moves_together,
    the_projectors_share_one_jetstream_consumer_that_acks_every_event,
    an_event_larger_than_nats_takes_goes_out_by_reference,
    the_list_follows_the_store_while_nats_is_down,
    an_event_a_projection_cannot_apply_is_reported_not_skipped,
    a_rebuild_beside_a_live_projector_under_load_loses_nothing,
    a_stream_is_bound_to_its_store_and_takes_no_foreign_events,
);

/// With NATS: every event reaches the stream once, as a CloudEvent on its subject, in order per
/// aggregate, and the projector fed from JetStream keeps the list.
/// On SQLite the writer hands this process's commits to the projectors itself, and the relay
/// reads the log only for what other processes append. Another process's event reaches the list
/// alone (found by the head's poll) and just before one of this process's own (which arrives
/// first, so the projector catches up on the gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_processs_appends_reach_the_list_beside_this_ones() {
    let server = TestServer::start(Backend::Sqlite).await;
    let theirs = server.config().open_store(&[]).await.unwrap();
    let (alone, before_ours, ours) =
        (server.conversation().await, server.conversation().await, server.conversation().await);
    let listed = |list: &Value| -> Vec<String> {
        list["data"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
    };

    let sequence = server.all_events("conversations", &alone).await.len();
    let position = theirs.append(vec![deleted_event(&alone, sequence + 1, "elsewhere")]).await.unwrap();
    let list = server.get(&format!("/v1/conversations?min_position={position}")).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    assert!(!listed(&list.body).contains(&alone), "the other process's delete reached the list");

    let sequence = server.all_events("conversations", &before_ours).await.len();
    theirs.append(vec![deleted_event(&before_ours, sequence + 1, "elsewhere")]).await.unwrap();
    let reply = server
        .post(
            &format!("/v1/conversations/{ours}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "mine"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let position = reply.headers["colloquy-position"].to_str().unwrap().to_owned();
    let list = server.get(&format!("/v1/conversations?min_position={position}")).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let ids = listed(&list.body);
    assert!(!ids.contains(&before_ours), "the other process's earlier delete is applied too");
    let row = list.body["data"].as_array().unwrap().iter().find(|r| r["id"] == ours.as_str()).unwrap();
    assert_eq!(row["last_message"]["preview"], "mine");
    theirs.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_jetstream_once_as_a_cloud_event() {
    let nats = NatsServer::start().await;
    let server =
        TestServer::start_with(Backend::Postgres, |config| config.nats_url = Some(nats.url.clone())).await;
    let id = server.conversation().await;
    let mut last_position = String::new();
    for n in 0..10 {
        let reply = server
            .post(
                &format!("/v1/conversations/{id}/messages"),
                json!({"sender": {"kind": "customer"}, "text": format!("m{n}")}),
            )
            .await;
        last_position = reply.headers["colloquy-position"].to_str().unwrap().to_owned();
    }
    let list = server.get(&format!("/v1/conversations?min_position={last_position}")).await;
    assert_eq!(list.body["data"][0]["message_count"], 10);

    let client = async_nats::connect(&nats.url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream.get_stream("COLLOQUY_EVENTS").await.unwrap();
    let consumer =
        stream.create_consumer(async_nats::jetstream::consumer::pull::Config::default()).await.unwrap();
    let expected_total: i64 = last_position.parse().unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut envelopes: Vec<(String, Value)> = Vec::new();
    while (envelopes.len() as i64) < expected_total {
        let message =
            tokio::time::timeout(Duration::from_secs(10), messages.next()).await.unwrap().unwrap().unwrap();
        envelopes.push((message.subject.to_string(), serde_json::from_slice(&message.payload).unwrap()));
        message.ack().await.unwrap();
    }
    let positions: Vec<i64> = envelopes.iter().map(|(_, e)| e["position"].as_i64().unwrap()).collect();
    assert_eq!(positions, (1..=expected_total).collect::<Vec<_>>(), "one message per event, in log order");
    let conversation_events: Vec<&(String, Value)> =
        envelopes.iter().filter(|(_, e)| e["subject"] == format!("conversation/{id}")).collect();
    assert_eq!(conversation_events.len(), 11);
    let (subject, first) = conversation_events[0];
    assert_eq!(subject, &format!("colloquy.events.default.conversation.{id}"));
    assert_eq!(first["specversion"], "1.0");
    assert_eq!(first["type"], "colloquy.conversation.ConversationOpened.v1.0");
    assert_eq!(first["tenant"], "default");
    assert_eq!(first["sequence"], 1);
    assert!(first["id"].is_string() && first["time"].is_string());
    let sequences: Vec<i64> =
        conversation_events.iter().map(|(_, e)| e["sequence"].as_i64().unwrap()).collect();
    assert_eq!(sequences, (1..=11).collect::<Vec<_>>());
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (_, envelope) in &envelopes {
        *ids.entry(envelope["id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert!(ids.values().all(|count| *count == 1), "no event id twice");
    server.stop().await;
}

/// An event whose envelope is larger than the NATS server takes (here a server configured for
/// 16 KiB messages; at the default 1 MiB, a message near the body limit) goes out without its
/// data, naming in `dataref` where to read it whole; the events after it go out as ever, and the
/// read models take it from the store. (Before, the relay stopped at it for good.)
async fn an_event_larger_than_nats_takes_goes_out_by_reference(backend: Backend) {
    let nats = NatsServer::start_with_max_payload(16 * 1024).await;
    let server = TestServer::start_with(backend, |config| config.nats_url = Some(nats.url.clone())).await;
    let id = server.conversation().await;
    let large = "x".repeat(20_000);
    let large_at = server.customer_message(&id, &large).await;
    let last = server.customer_message(&id, "small").await;
    let list = server.get(&format!("/v1/conversations?min_position={last}")).await;
    assert_eq!(list.body["data"][0]["message_count"], 2, "{:?}", list.body);

    let jetstream = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let stream = jetstream.get_stream("COLLOQUY_EVENTS").await.unwrap();
    let consumer =
        stream.create_consumer(async_nats::jetstream::consumer::pull::Config::default()).await.unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut envelopes: Vec<Value> = Vec::new();
    while envelopes.last().and_then(|e| e["position"].as_i64()) != Some(last) {
        let message =
            tokio::time::timeout(Duration::from_secs(10), messages.next()).await.unwrap().unwrap().unwrap();
        envelopes.push(serde_json::from_slice(&message.payload).unwrap());
    }
    let by_reference = envelopes.iter().find(|e| e["position"] == large_at).unwrap();
    assert!(by_reference.get("data").is_none(), "{by_reference}");
    assert_eq!(by_reference["type"], "colloquy.conversation.MessageAdded.v1.0");
    let dataref = by_reference["dataref"].as_str().unwrap();
    assert_eq!(dataref, format!("/v1/events?after={}&limit=1", large_at - 1));
    let whole = server.get(dataref).await;
    assert_eq!(whole.body["data"][0]["position"], large_at, "{:?}", whole.body);
    let text = whole.body["data"][0]["data"]["content"]["text"].as_str();
    assert!(text == Some(large.as_str()), "the event whole, its text of {:?} bytes", text.map(str::len));
    // A customer's text is sealed on the stream (docs/adr/0011); the log reads it revealed.
    let small = envelopes.last().unwrap();
    assert!(small["data"]["content"]["text"]["$pii"].is_object(), "{small}");
    assert!(!small.to_string().contains("small"), "{small}");
    let revealed = server.get(&format!("/v1/events?after={}&limit=1", last - 1)).await;
    assert_eq!(revealed.body["data"][0]["data"]["content"]["text"], "small", "{:?}", revealed.body);
    server.stop().await;
}

/// A process's projectors read JetStream through one durable consumer, `projections`, which
/// gets each event once and acks it; a projection's consumer of its own, as every projection had
/// before, is deleted when the projectors start.
async fn the_projectors_share_one_jetstream_consumer_that_acks_every_event(backend: Backend) {
    use async_nats::jetstream::{consumer::pull, stream};
    let nats = NatsServer::start().await;
    let jetstream = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let events = jetstream
        .create_stream(stream::Config {
            name: "COLLOQUY_EVENTS".into(),
            subjects: vec!["colloquy.events.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let former =
        pull::Config { durable_name: Some("projection-conversation_list".into()), ..Default::default() };
    events.create_consumer(former).await.unwrap();

    let server = TestServer::start_with(backend, |config| config.nats_url = Some(nats.url.clone())).await;
    let id = server.conversation().await;
    let mut position = 0;
    for n in 0..10 {
        position = server.customer_message(&id, &format!("m{n}")).await;
    }
    let list = server.get(&format!("/v1/conversations?min_position={position}")).await;
    assert_eq!(list.body["data"][0]["message_count"], 10, "{:?}", list.body);

    let names: Vec<String> = events.consumer_names().map(Result::unwrap).collect().await;
    assert_eq!(names, ["projections"]);
    let acked = u64::try_from(position).unwrap();
    let info = eventually(Duration::from_secs(10), "every event acked by `projections`", || async {
        let mut shared = events.get_consumer::<pull::Config>("projections").await.unwrap();
        let info = shared.info().await.unwrap().clone();
        (info.ack_floor.stream_sequence == acked && info.num_ack_pending == 0).then_some(info)
    })
    .await;
    assert_eq!(info.delivered.stream_sequence, acked, "every event delivered: {info:?}");
    assert_eq!(info.num_pending, 0, "{info:?}");
    assert_eq!(info.num_redelivered, 0, "each once: {info:?}");
    server.stop().await;
}

/// While NATS is down the projectors follow the store (the JetStream feed has them catch up
/// from it while its client is disconnected), so a command's position still reaches the list;
/// once NATS is back the feed takes over again.
async fn the_list_follows_the_store_while_nats_is_down(backend: Backend) {
    let mut nats = NatsServer::start().await;
    let server = TestServer::start_with(backend, |config| {
        config.nats_url = Some(nats.url.clone());
        config.min_position_timeout_ms = 10_000;
    })
    .await;
    let id = server.conversation().await;
    async fn listed_by_min_position(server: &TestServer, id: &str, text: &str) {
        let position = server.customer_message(id, text).await;
        let list = server.get(&format!("/v1/conversations?min_position={position}")).await;
        assert_eq!(list.status, StatusCode::OK, "{text}: {:?}", list.body);
        assert_eq!(list.body["data"][0]["last_message"]["preview"], text, "{:?}", list.body);
    }
    listed_by_min_position(&server, &id, "before").await;
    nats.kill();
    listed_by_min_position(&server, &id, "while down").await;
    nats.spawn().await;
    listed_by_min_position(&server, &id, "after").await;
    // The feed reads JetStream again: what the relay published reaches its consumer. (Not its
    // ack floor: acks the killed server had not written out come back as redeliveries, after
    // the ack wait, and are skipped by the checkpoints.)
    let jetstream = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    eventually(Duration::from_secs(15), "the feed taking every published event", || async {
        let mut events = jetstream.get_stream("COLLOQUY_EVENTS").await.unwrap();
        let published = events.info().await.unwrap().state.last_sequence;
        let shared = events.get_consumer::<async_nats::jetstream::consumer::pull::Config>("projections");
        let delivered = shared.await.unwrap().info().await.unwrap().delivered.stream_sequence;
        (published > 0 && delivered == published).then_some(())
    })
    .await;
    server.stop().await;
}

/// The relay publishes this process's commits as its writer handed them over, and reads the log
/// for what it was not handed: another process's appends, between this one's. JetStream gets
/// every event once, in log order, each envelope as one built from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_gets_this_and_another_processs_commits_once_in_log_order() {
    let nats = NatsServer::start().await;
    let server =
        TestServer::start_with(Backend::Postgres, |config| config.nats_url = Some(nats.url.clone())).await;
    let theirs = server.config().open_store(&[]).await.unwrap();
    let ours = server.conversation().await;
    for n in 0..9 {
        if n % 3 == 0 {
            let other = server.conversation().await;
            let sequence = server.all_events("conversations", &other).await.len();
            theirs.append(vec![deleted_event(&other, sequence + 1, "elsewhere")]).await.unwrap();
        }
        let reply = server
            .post(
                &format!("/v1/conversations/{ours}/messages"),
                json!({"sender": {"kind": "customer"}, "text": format!("m{n}")}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }
    // Their last append, after all of ours.
    let other = server.conversation().await;
    let sequence = server.all_events("conversations", &other).await.len();
    let head = theirs.append(vec![deleted_event(&other, sequence + 1, "elsewhere")]).await.unwrap();

    let log = colloquy_infra::log::GlobalLog::start(theirs.clone()).await.unwrap();
    // As stored: JetStream carries a contact's personal data sealed (docs/adr/0011).
    let stored = log.read_stored(0, 10_000, None).await.unwrap();
    assert_eq!(stored.len() as i64, head);
    let client = async_nats::connect(&nats.url).await.unwrap();
    let stream = async_nats::jetstream::new(client).get_stream("COLLOQUY_EVENTS").await.unwrap();
    let consumer =
        stream.create_consumer(async_nats::jetstream::consumer::pull::Config::default()).await.unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut envelopes: Vec<Value> = Vec::new();
    while (envelopes.len() as i64) < head {
        let message =
            tokio::time::timeout(Duration::from_secs(10), messages.next()).await.unwrap().unwrap().unwrap();
        envelopes.push(serde_json::from_slice(&message.payload).unwrap());
        message.ack().await.unwrap();
    }
    let more = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
    assert!(more.is_err(), "no event is published twice: {more:?}");
    for (envelope, event) in envelopes.iter().zip(&stored) {
        let from_log: Value =
            serde_json::from_str(&colloquy_infra::envelope::cloud_event_json(event)).unwrap();
        assert_eq!(envelope, &from_log, "position {:?}", event.position);
    }
    let actors: Vec<&str> = stored
        .iter()
        .filter(|e| e.event_type == "ConversationDeleted")
        .map(|e| e.aggregate_id.as_str())
        .collect();
    assert_eq!(actors.len(), 4, "their four deletes are in the log and so on JetStream");
    theirs.close().await;
    server.stop().await;
}

/// The message count of conversation `id` in a PostgreSQL store's list.
async fn listed_messages(store: &colloquy_infra::Store, id: &str) -> i64 {
    let sql = "SELECT message_count FROM conversation_list WHERE conversation_id = $1";
    sqlx::query_scalar(sql).bind(id).fetch_one(store.reads().postgres().unwrap()).await.unwrap()
}

/// Appends `copies` more messages to conversation `id`, each a copy of its first with new ids,
/// straight to the store (so no projector of a server sees them); the position of the last.
async fn append_copies_of_its_first_message(
    store: &colloquy_infra::Store,
    log: &colloquy_infra::GlobalLog,
    id: &str,
    copies: usize,
) -> i64 {
    let first = log
        .read(0, 1000, None)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "MessageAdded" && e.aggregate_id == id)
        .unwrap();
    let mut position = 0;
    for _ in 0..copies {
        let mut payload = first.payload.to_value();
        payload["MessageAdded"]["message_id"] = json!(uuid::Uuid::now_v7());
        let mut metadata = first.metadata.to_value();
        metadata["event_id"] = json!(uuid::Uuid::now_v7());
        let sequence = store.current_version(&default_tenant(), "conversation", id).await.unwrap();
        let event = cqrs_es::persist::SerializedEvent::new(
            id.to_owned(),
            usize::try_from(sequence).unwrap() + 1,
            "conversation".into(),
            "MessageAdded".into(),
            first.event_version.clone(),
            payload,
            metadata,
        );
        position = store.append(vec![event]).await.unwrap();
    }
    position
}

/// Requests waiting for a position that another instance of the projector applies (as when the
/// projectors run in a process of their own) see it once that instance commits. They read the
/// stored checkpoint together, about once per `WAITERS_READ_EVERY` however many wait, instead of
/// each every 50 ms; one whose position does not come in time gets false at its deadline.
async fn waiters_read_a_checkpoint_another_instance_moves_together(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let position = server.customer_message(&id, "m").await;
    server.get(&format!("/v1/conversations?min_position={position}")).await;
    server.shut_down().await;

    let store = server.config().open_store(&[]).await.unwrap();
    let log = colloquy_infra::GlobalLog::start(store.clone()).await.unwrap();
    let end = append_copies_of_its_first_message(&store, &log, &id, 3).await;
    let projection = colloquy_projections::by_name("conversation_list").unwrap();
    let (applying, waiting) = (
        colloquy_projections::Projector::new(log.clone(), projection.clone()),
        colloquy_projections::Projector::new(log.clone(), projection.clone()),
    );
    let waiters: Vec<_> = (0..40)
        .map(|_| {
            let waiting = waiting.clone();
            tokio::spawn(async move { waiting.wait_for(end, Duration::from_secs(10)).await.unwrap() })
        })
        .collect();
    let late = {
        let waiting = waiting.clone();
        tokio::spawn(async move { waiting.wait_for(end + 1, Duration::from_millis(600)).await.unwrap() })
    };
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(applying.catch_up().await.unwrap(), end);
    for waiter in waiters {
        assert!(waiter.await.unwrap(), "a waiter saw the other instance's commit");
    }
    assert!(!late.await.unwrap(), "nothing reaches {} in time", end + 1);
    // About one read per interval over the late waiter's 600 ms: forty waiters reading each
    // their own would have made hundreds.
    let intervals =
        started.elapsed().as_millis() / colloquy_projections::runtime::WAITERS_READ_EVERY.as_millis();
    let reads = u128::from(waiting.waiters_reads());
    assert!((2..=intervals + 3).contains(&reads), "{reads} reads in {intervals} intervals");
    store.close().await;
    server.stop().await;
}

/// Two instances of one projector applying the log by turns, each handed everything since its
/// own last turn (as a consumer's redelivery would): one whose commit is still the stored
/// checkpoint moves it with the statement that locks it; one that finds it moved by the other
/// reads it and applies only what is fresh. Every message counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projector_instances_by_turns_apply_each_event_once() {
    let mut server = TestServer::start(Backend::Postgres).await;
    let id = server.conversation().await;
    let position = server.customer_message(&id, "m").await;
    let listed = server.get(&format!("/v1/conversations?min_position={position}")).await;
    assert_eq!(listed.body["data"][0]["message_count"], 1, "{:?}", listed.body);
    server.shut_down().await;

    // Twelve more messages, appended as the server appended the first; no projector runs.
    let store = server.config().open_store(&[]).await.unwrap();
    let log = colloquy_infra::GlobalLog::start(store.clone()).await.unwrap();
    append_copies_of_its_first_message(&store, &log, &id, 12).await;
    let events = log.read(position, 1000, None).await.unwrap();
    assert_eq!(events.len(), 12);

    let projection = colloquy_projections::by_name("conversation_list").unwrap();
    let instances = [
        colloquy_projections::Projector::new(log.clone(), projection.clone()),
        colloquy_projections::Projector::new(log.clone(), projection.clone()),
    ];
    let mut handed_up_to = [position, position];
    let mut end = position;
    for turn in 0..6 {
        // Turns of the first, the first again, then the second: each kind of turn comes twice.
        let who = usize::from(turn % 3 == 2);
        end += 2;
        let batch: Vec<_> = events
            .iter()
            .filter(|e| e.position.is_some_and(|p| p > handed_up_to[who] && p <= end))
            .cloned()
            .collect();
        let applied = instances[who].apply(&batch).await.unwrap();
        assert_eq!(applied, colloquy_projections::Applied::UpTo(end), "turn {turn}");
        handed_up_to[who] = end;
    }
    let stored = colloquy_infra::checkpoints::read(&store, "projection:conversation_list").await.unwrap();
    assert_eq!(stored, end);
    let count = listed_messages(&store, &id).await;
    assert_eq!(count, 13, "every message counted once");
    store.close().await;
    server.stop().await;
}

/// An instance handed a batch with a hole in it (several instances share one JetStream consumer,
/// so the event between went to another) steps over nothing, even when it ignores every event it
/// was handed: the instance that has the event in the hole still applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_handed_a_batch_with_a_hole_does_not_step_over_it() {
    let mut server = TestServer::start(Backend::Postgres).await;
    let policy = json!({"name": "Fast", "targets": [{"metric": "first_response", "threshold_seconds": 60}]});
    assert_eq!(server.post("/v1/sla-policies", policy).await.status, StatusCode::CREATED);
    let id = server.conversation().await;
    let position = server.customer_message(&id, "m").await;
    server.get(&format!("/v1/conversations?min_position={position}")).await;
    server.shut_down().await;

    // A policy (which the list ignores), a message (which it counts), and another policy,
    // appended as the server would have; no projector runs.
    let store = server.config().open_store(&[]).await.unwrap();
    let log = colloquy_infra::GlobalLog::start(store.clone()).await.unwrap();
    let created =
        log.read(0, 1000, None).await.unwrap().into_iter().find(|e| e.event_type == "SlaPolicyCreated");
    let created = created.unwrap();
    let another_policy = || {
        let mut metadata = created.metadata.to_value();
        metadata["event_id"] = json!(uuid::Uuid::now_v7());
        cqrs_es::persist::SerializedEvent::new(
            uuid::Uuid::now_v7().to_string(),
            1,
            created.aggregate_type.clone(),
            created.event_type.clone(),
            created.event_version.clone(),
            created.payload.to_value(),
            metadata,
        )
    };
    store.append(vec![another_policy()]).await.unwrap();
    append_copies_of_its_first_message(&store, &log, &id, 1).await;
    store.append(vec![another_policy()]).await.unwrap();
    let events = log.read(position, 1000, None).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        ["SlaPolicyCreated", "MessageAdded", "SlaPolicyCreated"]
    );

    let projection = colloquy_projections::by_name("conversation_list").unwrap();
    let (first, second) = (
        colloquy_projections::Projector::new(log.clone(), projection.clone()),
        colloquy_projections::Projector::new(log.clone(), projection.clone()),
    );
    assert_eq!(first.checkpoint().await.unwrap(), position);
    assert_eq!(second.checkpoint().await.unwrap(), position);
    // The first is handed the two policies, the second the message between them.
    let holed = [events[0].clone(), events[2].clone()];
    assert_eq!(
        first.apply(&holed).await.unwrap(),
        colloquy_projections::Applied::Gap { checkpoint: position },
        "a batch with a hole is a gap, though the list ignores all of it"
    );
    first.flush_checkpoint().await.unwrap();
    // The second, missing the first policy, catches up from the stored checkpoint.
    assert_eq!(
        second.apply(&events[1..2]).await.unwrap(),
        colloquy_projections::Applied::Gap { checkpoint: position }
    );
    assert_eq!(second.catch_up().await.unwrap(), position + 3);
    assert_eq!(first.catch_up().await.unwrap(), position + 3);
    let count = listed_messages(&store, &id).await;
    assert_eq!(count, 2, "the message in the hole is counted");
    store.close().await;
    server.stop().await;
}

/// `/readyz` checks NATS when the process relays through it: ready while nats-server runs, 503
/// naming NATS once it is gone, ready again when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_nats_is_unreachable() {
    async fn readyz(server: &TestServer) -> (StatusCode, Value) {
        let response = server.client.get(server.url("/readyz")).send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }
    async fn until(server: &TestServer, status: StatusCode) -> Value {
        let mut last = Value::Null;
        for _ in 0..100 {
            let (answered, body) = readyz(server).await;
            if answered == status {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("/readyz did not answer {status} within 10 s: {last}");
    }
    let mut nats = NatsServer::start().await;
    let server =
        TestServer::start_with(Backend::Sqlite, |config| config.nats_url = Some(nats.url.clone())).await;
    let ready = until(&server, StatusCode::OK).await;
    assert_eq!(ready["checks"]["nats"]["status"], "ok", "{ready}");

    nats.kill();
    let not_ready = until(&server, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(not_ready["status"], "not_ready", "{not_ready}");
    assert_eq!(not_ready["checks"]["nats"]["status"], "failing", "{not_ready}");
    assert!(not_ready["checks"]["nats"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{not_ready}");
    assert_eq!(not_ready["checks"]["store"]["status"], "ok", "only NATS fails: {not_ready}");
    let probe = std::time::Instant::now();
    readyz(&server).await;
    assert!(probe.elapsed() < Duration::from_secs(2), "a probe answers quickly while NATS is down");

    nats.spawn().await;
    let ready_again = until(&server, StatusCode::OK).await;
    assert_eq!(ready_again["checks"]["nats"]["status"], "ok", "{ready_again}");
    server.stop().await;
}
