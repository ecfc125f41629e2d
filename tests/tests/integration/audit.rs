//! The hash chain on both stores: every appended event is linked, `audit::verify` walks it
//! clean; an attacker with database access who edits a payload (bypassing the append-only
//! trigger) is named at that position; one who removes an event is named too; one who also
//! recomputes every link passes a plain walk but not a signed checkpoint taken before.

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Row;

use colloquy_domain::TenantId;
use colloquy_infra::audit::{self, Checkpoint};
use colloquy_infra::chain::{self, Hash, Linked, GENESIS};
use colloquy_infra::{tokens, Store};

use crate::common::{Backend, TestServer};

/// Some history in two tenants: conversations with messages.
async fn history(server: &TestServer) -> (i64, String) {
    let store = server.config().open_store(&[]).await.unwrap();
    let other = TenantId::parse("other").unwrap();
    let issued =
        tokens::create_token(&store, &other, "other", &["admin".to_owned()], None, Utc::now()).await.unwrap();
    store.close().await;
    let mut marked = None;
    for n in 0..3 {
        let id = server.conversation().await;
        server.customer_message(&id, "a customer's text, stored sealed").await;
        // An agent's text is stored as written: what the attacker below edits.
        let path = format!("/v1/conversations/{id}/messages");
        let sent = server
            .post(&path, json!({"sender": {"kind": "user", "id": "agent-1"}, "text": format!("hello {n}")}))
            .await;
        assert_eq!(sent.status, StatusCode::CREATED, "{:?}", sent.body);
        let position: i64 = sent.headers["colloquy-position"].to_str().unwrap().parse().unwrap();
        if n == 1 {
            marked = Some((position, format!("hello {n}")));
        }
        let reply = server
            .client
            .post(server.url("/v1/contacts"))
            .bearer_auth(&issued.secret)
            .json(&json!({"first_name": "Other", "last_name": format!("Person {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::CREATED);
    }
    marked.unwrap()
}

async fn verify(
    store: &Store,
    tenant: Option<&TenantId>,
    from: i64,
    checkpoints: &[Checkpoint],
) -> audit::Verification {
    audit::verify(store, tenant, from, checkpoints, |_| {}).await.unwrap()
}

/// Runs `sql` as an attacker would: with the append-only guard out of the way.
async fn tamper(server: &TestServer, store: &Store, backend: Backend, sql: &str) {
    match backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(server.database_url().unwrap()).await.unwrap();
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
                .execute(&mut *conn)
                .await
                .unwrap();
            sqlx::query(sql).execute(&mut *conn).await.unwrap();
            sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
                .execute(&mut *conn)
                .await
                .unwrap();
            drop(conn);
            pool.close().await;
        }
        Backend::Sqlite => {
            let path = server.config().data_dir.join("colloquy.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
            for statement in [
                "DROP TRIGGER events_no_update",
                "DROP TRIGGER events_no_delete",
                sql,
                "CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
                "CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
            ] {
                sqlx::query(statement).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
    }
    let _ = store;
}

/// The event at global position `position`, as each store keys it.
fn at_position(backend: Backend, position: i64) -> String {
    match backend {
        Backend::Postgres => {
            format!("position = (SELECT event_position FROM event_log WHERE position = {position})")
        }
        Backend::Sqlite => format!("position = {position}"),
    }
}

async fn an_edited_payload_is_named_by_its_position(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (position, text) = history(&server).await;
    let store = server.config().open_store(&[]).await.unwrap();
    let head = colloquy_infra::log::read_head(&store).await.unwrap();
    let clean = verify(&store, None, 1, &[]).await;
    assert_eq!(clean.broken, None);
    assert_eq!((clean.events, clean.last_position), (u64::try_from(head).unwrap(), head));
    assert_eq!(clean.heads.len(), 2, "a chain per tenant: {:?}", clean.heads.keys());

    let payload = match backend {
        Backend::Postgres => "payload = replace(payload::text, '{text}', 'I never said that')::json",
        Backend::Sqlite => "payload = replace(payload, '{text}', 'I never said that')",
    }
    .replace("{text}", &text);
    tamper(
        &server,
        &store,
        backend,
        &format!("UPDATE events SET {payload} WHERE {}", at_position(backend, position)),
    )
    .await;

    let broken = verify(&store, None, 1, &[]).await.broken.expect("the edit is found");
    assert_eq!(broken.position, position);
    assert_eq!(broken.tenant_id.as_deref(), Some("default"));
    let tenant = TenantId::parse("default").unwrap();
    assert_eq!(verify(&store, Some(&tenant), 1, &[]).await.broken.map(|b| b.position), Some(position));
    // The other tenant's chain is untouched, and a walk from after the edit takes links as stored.
    let other = TenantId::parse("other").unwrap();
    assert_eq!(verify(&store, Some(&other), 1, &[]).await.broken, None);
    assert_eq!(verify(&store, None, position + 1, &[]).await.broken, None);
    store.close().await;
    server.stop().await;
}

async fn a_removed_event_is_named(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (position, _) = history(&server).await;
    let store = server.config().open_store(&[]).await.unwrap();
    tamper(&server, &store, backend, &format!("DELETE FROM events WHERE {}", at_position(backend, position)))
        .await;
    let broken = verify(&store, None, 1, &[]).await.broken.expect("the removal is found");
    assert_eq!(broken.position, position, "{broken:?}");
    store.close().await;
    server.stop().await;
}

/// What an attacker who knows the scheme does after an edit: recomputes every link from
/// `from` on, so that a plain walk passes.
async fn relink(server: &TestServer, backend: Backend, from: i64) {
    let read = "SELECT position, tenant_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata";
    let mut heads: std::collections::HashMap<String, Hash> = std::collections::HashMap::new();
    let mut links: Vec<(i64, Hash)> = Vec::new();
    let mut link = |row: &dyn Fn(&str) -> String, position: i64, sequence: i64, prev: Option<Hash>| {
        let tenant = row("tenant_id");
        let prev = heads.get(&tenant).copied().or(prev).unwrap_or(GENESIS);
        let (t, i, et, ev, p, m) = (
            row("aggregate_type"),
            row("aggregate_id"),
            row("event_type"),
            row("event_version"),
            row("payload"),
            row("metadata"),
        );
        let hash = chain::link(
            &prev,
            &Linked {
                tenant_id: &tenant,
                position,
                aggregate_type: &t,
                aggregate_id: &i,
                sequence,
                event_type: &et,
                event_version: &ev,
                payload: &p,
                metadata: &m,
            },
        );
        heads.insert(tenant, hash);
        links.push((position, hash));
    };
    match backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(server.database_url().unwrap()).await.unwrap();
            let rows = sqlx::query(&format!(
                "SELECT l.position, l.tenant_id, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version,
                        e.payload::text AS payload, e.metadata::text AS metadata,
                        (SELECT p.hash FROM event_log p WHERE p.tenant_id = l.tenant_id AND p.position < {from} ORDER BY p.position DESC LIMIT 1) AS prev
                   FROM event_log l JOIN events e ON e.position = l.event_position WHERE l.position >= {from} ORDER BY l.position"
            ))
            .fetch_all(&pool)
            .await
            .unwrap();
            for row in &rows {
                let prev: Option<Vec<u8>> = row.get("prev");
                link(
                    &|c| row.get::<String, _>(c),
                    row.get("position"),
                    row.get("sequence"),
                    prev.as_deref().and_then(chain::hash_of),
                );
            }
            for (position, hash) in &links {
                sqlx::query("UPDATE event_log SET hash = $1 WHERE position = $2")
                    .bind(&hash[..])
                    .bind(position)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        Backend::Sqlite => {
            let path = server.config().data_dir.join("colloquy.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
            let rows = sqlx::query(&format!(
                "{read}, (SELECT h.hash FROM events p JOIN event_hashes h ON h.position = p.position
                           WHERE p.tenant_id = e.tenant_id AND p.position < {from} ORDER BY p.position DESC LIMIT 1) AS prev
                   FROM events e WHERE position >= {from} ORDER BY position"
            ))
            .fetch_all(&pool)
            .await
            .unwrap();
            for row in &rows {
                let prev: Option<Vec<u8>> = row.get("prev");
                link(
                    &|c| row.get::<String, _>(c),
                    row.get("position"),
                    row.get("sequence"),
                    prev.as_deref().and_then(chain::hash_of),
                );
            }
            for (position, hash) in &links {
                sqlx::query("UPDATE event_hashes SET hash = ? WHERE position = ?")
                    .bind(&hash[..])
                    .bind(position)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
    }
}

async fn a_rewritten_history_passes_a_plain_walk_but_not_a_signed_checkpoint(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (position, text) = history(&server).await;
    let store = server.config().open_store(&[]).await.unwrap();
    let key = audit::generate_key();
    let clean = verify(&store, None, 1, &[]).await;
    let (head_position, head_hash) = clean.heads["default"].clone();
    let checkpoint = Checkpoint::sign(&key, store.id(), "default", (head_position, &head_hash), Utc::now());
    checkpoint.check_signature(&key.verifying_key()).unwrap();
    assert_eq!(verify(&store, None, 1, std::slice::from_ref(&checkpoint)).await.checkpoints_matched, 1);

    let payload = match backend {
        Backend::Postgres => "payload = replace(payload::text, '{text}', 'rewritten')::json",
        Backend::Sqlite => "payload = replace(payload, '{text}', 'rewritten')",
    }
    .replace("{text}", &text);
    tamper(
        &server,
        &store,
        backend,
        &format!("UPDATE events SET {payload} WHERE {}", at_position(backend, position)),
    )
    .await;
    relink(&server, backend, position).await;
    assert_eq!(verify(&store, None, 1, &[]).await.broken, None, "every link recomputed: a plain walk passes");
    let broken = verify(&store, None, 1, &[checkpoint]).await.broken.expect("the checkpoint catches it");
    assert_eq!(broken.position, head_position);
    assert!(broken.reason.contains("rewritten"), "{}", broken.reason);
    store.close().await;
    server.stop().await;
}

/// A read's body without what only the inbox read model adds (the contact's summary, the SLA).
fn state_of(mut body: serde_json::Value) -> serde_json::Value {
    if let Some(object) = body.as_object_mut() {
        object.remove("contact");
        object.remove("sla");
    }
    body
}

/// Point-in-time reads give, at each moment, the state a live read gave then.
async fn a_read_as_of_a_moment_is_the_state_read_live_then(backend: Backend) {
    use reqwest::Method;
    let server = TestServer::start(backend).await;
    let contact = server.contact().await;
    let opened = server
        .post("/v1/conversations", json!({"contact_id": contact, "channel": "email", "subject": "Order"}))
        .await;
    let id = opened.body["id"].as_str().unwrap().to_owned();
    let at = |path: &str| format!("/v1/conversations/{id}{path}");
    let steps: Vec<(Method, String, serde_json::Value)> = vec![
        (Method::POST, at("/messages"), json!({"sender": {"kind": "customer"}, "text": "Where is it?"})),
        (Method::PATCH, at(""), json!({"priority": "high", "subject": "Lost order"})),
        (Method::POST, at("/labels"), json!({"add": ["vip"]})),
        (
            Method::POST,
            at("/messages"),
            json!({"sender": {"kind": "user", "id": "ana"}, "text": "On its way"}),
        ),
        (Method::POST, at("/status"), json!({"status": "closed"})),
        (Method::PATCH, format!("/v1/contacts/{contact}"), json!({"first_name": "Annie"})),
    ];
    // (position, moment, conversation, its messages, the contact), read live after each write.
    let mut captured = Vec::new();
    let mut rows = Vec::new();
    for (method, path, body) in steps {
        let reply = server.call(method, &path, Some(body)).await;
        assert!(reply.status.is_success(), "{path}: {:?}", reply.body);
        let position: i64 = reply.headers["colloquy-position"].to_str().unwrap().parse().unwrap();
        let conversation = server.get(&at("")).await;
        let messages = server.get(&at("/messages")).await;
        let person = server.get(&format!("/v1/contacts/{contact}")).await;
        // The inbox row, once the read model has this write.
        let listed = server.get(&format!("/v1/conversations?min_position={position}")).await;
        assert_eq!(listed.status, StatusCode::OK);
        let row = server.get(&at("/inbox-row")).await;
        assert_eq!(row.status, StatusCode::OK, "{:?}", row.body);
        rows.push(row.body);
        captured.push((position, Utc::now(), state_of(conversation.body), messages.body, person.body));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for ((position, moment, conversation, messages, person), row) in captured.iter().zip(&rows) {
        let moment = moment.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        for point in [format!("at_position={position}"), format!("as_of={}", moment.replace('+', "%2B"))] {
            let then = server.get(&format!("{}?{point}", at(""))).await;
            assert_eq!(then.status, StatusCode::OK, "{point}: {:?}", then.body);
            assert_eq!(&state_of(then.body), conversation, "the conversation at {point}");
            assert!(then.headers["colloquy-position"].to_str().unwrap().parse::<i64>().unwrap() <= *position);
            let listed = server.get(&format!("{}?{point}", at("/messages"))).await;
            assert_eq!(&listed.body, messages, "its messages at {point}");
            let contact_then = server.get(&format!("/v1/contacts/{contact}?{point}")).await;
            assert_eq!(&contact_then.body, person, "the contact at {point}");
            let row_then = server.get(&format!("{}?{point}", at("/inbox-row"))).await;
            assert_eq!(&row_then.body, row, "the inbox row (with its contact then) at {point}");
        }
    }
    // Both parameters: whichever point comes first. Before it existed: 404; a bad one: 400.
    let (first_position, first_moment) =
        (captured[0].0, captured[0].1.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    let early_position =
        server.get(&format!("{}?at_position={first_position}&as_of=2999-01-01T00:00:00Z", at(""))).await;
    assert_eq!(state_of(early_position.body), captured[0].2);
    let last_position = captured.last().unwrap().0;
    let early_moment = server
        .get(&format!("{}?at_position={last_position}&as_of={}", at(""), first_moment.replace('+', "%2B")))
        .await;
    assert_eq!(state_of(early_moment.body), captured[0].2);
    server.get(&format!("{}?at_position=1", at(""))).await.assert_problem(StatusCode::NOT_FOUND);
    server.get(&format!("{}?as_of=yesterday", at(""))).await.assert_problem(StatusCode::BAD_REQUEST);
    server.get(&format!("{}?at_position=-3", at(""))).await.assert_problem(StatusCode::BAD_REQUEST);
    server.stop().await;
}

/// Every command is one audit entry, with who did it and its events; filters, pages and exports
/// agree; another tenant's commands are not there.
async fn every_command_is_one_audit_entry(backend: Backend) {
    use reqwest::Method;
    let server = TestServer::start(backend).await;
    let (_, _) = history(&server).await; // three conversations with a message each, and another tenant's contacts
    let bot =
        server.post("/v1/tokens", json!({"name": "triage-bot", "scopes": ["conversations:write"]})).await;
    let bot_id = bot.body["id"].as_str().unwrap().to_owned();
    let bot = bot.body["secret"].as_str().unwrap().to_owned();
    let id = server.conversation().await;
    let closed = server
        .client
        .post(server.url(&format!("/v1/conversations/{id}/status")))
        .bearer_auth(&bot)
        .header("x-request-id", "close-it-please")
        .json(&json!({"status": "closed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), StatusCode::OK);
    let deleted = server.call(Method::DELETE, &format!("/v1/conversations/{id}"), None).await;
    assert!(deleted.status.is_success(), "{:?}", deleted.body);

    let all = server.get("/v1/audit?limit=500").await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    let entries = all.body["data"].as_array().unwrap().clone();
    // The events of this tenant, each in exactly one entry, in log order.
    let events = server.get("/v1/events?limit=1000").await.body["data"].as_array().unwrap().clone();
    let covered: Vec<i64> = entries
        .iter()
        .flat_map(|e| {
            e["audited_changes"].as_array().unwrap().iter().map(|c| c["position"].as_i64().unwrap())
        })
        .collect();
    let positions: Vec<i64> = events.iter().map(|e| e["position"].as_i64().unwrap()).collect();
    assert_eq!(covered, positions, "every event of the tenant once, in order");
    assert!(entries.iter().all(|e| e["associated_id"] == "default"));
    // One entry per command: 4 contacts and conversations opened, 3 messages, a close, a delete.
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["auditable_type"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(actions.iter().filter(|a| **a == ("contact", "create")).count(), 4);
    assert_eq!(actions.iter().filter(|a| **a == ("conversation", "create")).count(), 4);
    assert_eq!(actions.iter().filter(|a| **a == ("conversation", "destroy")).count(), 1);
    let close = entries.iter().find(|e| e["event_types"] == json!(["StatusChanged"])).unwrap();
    assert_eq!(
        (close["username"].as_str(), close["request_uuid"].as_str()),
        (Some(bot_id.as_str()), Some("close-it-please"))
    );
    assert_eq!(close["auditable_id"], id.as_str());
    assert_eq!(close["audited_changes"][0]["data"]["to"], "closed");

    // Filters.
    let by_bot =
        server.get(&format!("/v1/audit?actor={bot_id}")).await.body["data"].as_array().unwrap().len();
    assert_eq!(by_bot, 1);
    let statuses = server.get("/v1/audit?event_type=StatusChanged").await;
    assert_eq!(statuses.body["data"].as_array().unwrap().len(), 1);
    let one = server.get(&format!("/v1/audit?aggregate_type=conversation&aggregate_id={id}")).await;
    assert_eq!(one.body["data"].as_array().unwrap().len(), 3, "opened, closed, deleted: {:?}", one.body);
    let future = server.get("/v1/audit?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future.body["data"], json!([]));

    // Pages of two give the same entries.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = server.get(&format!("/v1/audit?limit=2&cursor={cursor}")).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        paged.extend(page.body["data"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged, entries);

    // Exports: one line per entry.
    let reply = server
        .client
        .get(server.url("/v1/audit"))
        .bearer_auth(&server.token)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let csv_text = reply.text().await.unwrap();
    assert_eq!(csv_text.lines().count(), entries.len() + 1, "a header and a row each");
    let reply = server
        .client
        .get(server.url("/v1/audit"))
        .bearer_auth(&server.token)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<serde_json::Value> =
        reply.text().await.unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, entries);

    // The scope, and a bad cursor.
    let denied = server.client.get(server.url("/v1/audit")).bearer_auth(&bot).send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    server.get("/v1/audit?cursor=bm9wZQ").await.assert_problem(StatusCode::BAD_REQUEST);
    server.stop().await;
}

on_both_stores!(
    every_command_is_one_audit_entry,
    a_read_as_of_a_moment_is_the_state_read_live_then,
    an_edited_payload_is_named_by_its_position,
    a_removed_event_is_named,
    a_rewritten_history_passes_a_plain_walk_but_not_a_signed_checkpoint,
);

/// Two writers on one SQLite file (another process's store beside the server's), appending in
/// turns: each one's appends are linked after the other's, although each writer links its next
/// append from what it knew after its own last commit (the other's positions are then taken, and
/// it reads the chain again): the chain verifies whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_sqlite_file_keep_one_chain() {
    let server = TestServer::start(Backend::Sqlite).await;
    let theirs = server.config().open_store(&[]).await.unwrap();
    let ids = [server.conversation().await, server.conversation().await];
    let ours_id = server.conversation().await;
    for round in 0..5 {
        for id in &ids {
            let sequence = server.all_events("conversations", id).await.len();
            let event = crate::common::deleted_event(id, sequence + 1, "elsewhere");
            // Their writer first, then ours, which had not seen it.
            let theirs_at = theirs.append(vec![event]).await.unwrap();
            let ours = server.customer_message(&ours_id, &format!("round {round}")).await;
            assert!(ours > theirs_at, "positions follow commit order across the writers");
        }
    }
    let store = server.config().open_store(&[]).await.unwrap();
    let head = colloquy_infra::log::read_head(&store).await.unwrap();
    let verified = verify(&store, None, 1, &[]).await;
    assert_eq!(verified.broken, None, "{:?}", verified.broken);
    assert_eq!(verified.last_position, head);
    assert_eq!(verified.events, u64::try_from(head).unwrap());
    theirs.close().await;
    store.close().await;
    server.stop().await;
}
