//! Tokens and tenants over HTTP, on both stores: scopes answer 403 naming the scope, missing,
//! unknown, expired and revoked tokens 401, and a token of another tenant gets 404 for anything
//! of this one, on every route class.

#![allow(clippy::unwrap_used)]

use crate::common;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{Backend, TestServer};
use colloquy_domain::TenantId;
use colloquy_infra::{tokens, Store};

/// A caller with an admin token, named `name`, of tenant `other`.
async fn admin_of_tenant_other(server: &TestServer, name: &str) -> Caller {
    let store = server.config().open_store(&[]).await.unwrap();
    let other = TenantId::parse("other").unwrap();
    let issued =
        tokens::create_token(&store, &other, name, &["admin".to_owned()], None, Utc::now()).await.unwrap();
    store.close().await;
    Caller::new(Some(&issued.secret))
}

struct Caller {
    client: reqwest::Client,
    secret: Option<String>,
}

impl Caller {
    fn new(secret: Option<&str>) -> Self {
        Self { client: reqwest::Client::new(), secret: secret.map(str::to_owned) }
    }

    async fn call(
        &self,
        server: &TestServer,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, server.url(path));
        if let Some(secret) = &self.secret {
            request = request.bearer_auth(secret);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_client_error() {
            assert_eq!(content_type, "application/problem+json", "{body}");
        }
        (status, body)
    }
}

async fn scopes_and_token_states_decide_access(backend: Backend) {
    let server = TestServer::start(backend).await;
    let conversation = server.conversation().await;
    let created =
        server.post("/v1/tokens", json!({"name": "dashboard", "scopes": ["conversations:read"]})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let reader = Caller::new(Some(created.body["secret"].as_str().unwrap()));
    let (status, _) =
        reader.call(&server, Method::GET, &format!("/v1/conversations/{conversation}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = reader
        .call(
            &server,
            Method::POST,
            &format!("/v1/conversations/{conversation}/status"),
            Some(json!({"status": "closed"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["detail"].as_str().unwrap().contains("conversations:write"), "{body}");
    let (status, body) =
        reader.call(&server, Method::GET, "/v1/contacts/00000000-0000-7000-8000-000000000000", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["detail"].as_str().unwrap().contains("contacts:read"), "{body}");
    let (status, body) = reader.call(&server, Method::GET, "/v1/tokens", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["detail"].as_str().unwrap().contains("admin"), "{body}");

    // The list shows the token without its secret.
    let listed = server.get("/v1/tokens").await;
    let entry =
        listed.body["data"].as_array().unwrap().iter().find(|t| t["name"] == "dashboard").unwrap().clone();
    assert!(entry.get("secret").is_none() && entry.get("token_hash").is_none(), "{entry}");
    assert_eq!(entry["scopes"], json!(["conversations:read"]));

    // Revoked: 401 at once.
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(server.delete(&format!("/v1/tokens/{id}")).await.status, StatusCode::NO_CONTENT);
    let (status, _) = reader.call(&server, Method::GET, "/v1/conversations", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        server.delete("/v1/tokens/00000000-0000-7000-8000-000000000000").await.status,
        StatusCode::NOT_FOUND
    );

    // Expired: 401 once its time has passed.
    let expiring = server
        .post(
            "/v1/tokens",
            json!({"name": "brief", "scopes": ["conversations:read"],
                   "expires_at": (Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339()}),
        )
        .await;
    assert_eq!(expiring.status, StatusCode::CREATED, "{:?}", expiring.body);
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let brief = Caller::new(Some(expiring.body["secret"].as_str().unwrap()));
    assert_eq!(brief.call(&server, Method::GET, "/v1/conversations", None).await.0, StatusCode::UNAUTHORIZED);

    // Missing and unknown tokens.
    assert_eq!(
        Caller::new(None).call(&server, Method::GET, "/v1/conversations", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let unknown = Caller::new(Some("cq_not-a-token"));
    assert_eq!(
        unknown.call(&server, Method::GET, "/v1/conversations", None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Bad token requests.
    for bad in [
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "", "scopes": ["admin"]}),
    ] {
        server.post("/v1/tokens", bad).await.assert_problem(StatusCode::BAD_REQUEST);
    }
    // An expiry in the past is well formed, and refused as it stands.
    let past = json!({"name": "x", "scopes": ["admin"], "expires_at": "2000-01-01T00:00:00Z"});
    server.post("/v1/tokens", past).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    server.stop().await;
}

async fn another_tenant_sees_nothing_of_this_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let contact = server.contact().await;
    let conversation = server.conversation().await;
    let message = server
        .post(
            &format!("/v1/conversations/{conversation}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "secret"}),
        )
        .await;
    let message_id = message.body["id"].as_str().unwrap().to_owned();
    let own_tokens = server.get("/v1/tokens").await;
    let own_token = own_tokens.body["data"][0]["id"].as_str().unwrap().to_owned();

    let intruder = admin_of_tenant_other(&server, "other-admin").await;

    let not_found = [
        (Method::GET, format!("/v1/conversations/{conversation}"), None),
        (Method::PATCH, format!("/v1/conversations/{conversation}"), Some(json!({"subject": "mine now"}))),
        (Method::DELETE, format!("/v1/conversations/{conversation}"), None),
        (Method::POST, format!("/v1/conversations/{conversation}/status"), Some(json!({"status": "closed"}))),
        (Method::GET, format!("/v1/conversations/{conversation}/events"), None),
        (Method::GET, format!("/v1/conversations/{conversation}/messages"), None),
        (Method::GET, format!("/v1/conversations/{conversation}/messages/{message_id}"), None),
        (
            Method::POST,
            format!("/v1/conversations/{conversation}/messages"),
            Some(json!({"sender": {"kind": "customer"}, "text": "hi"})),
        ),
        (Method::GET, format!("/v1/contacts/{contact}"), None),
        (Method::PATCH, format!("/v1/contacts/{contact}"), Some(json!({"first_name": "X"}))),
        (Method::GET, format!("/v1/contacts/{contact}/events"), None),
        (Method::DELETE, format!("/v1/tokens/{own_token}"), None),
    ];
    for (method, path, body) in not_found {
        let (status, answer) = intruder.call(&server, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
        assert!(!answer.to_string().contains("secret"), "{answer}");
    }
    // Opening a conversation with this tenant's contact: the contact is unknown there.
    let (status, _) = intruder
        .call(
            &server,
            Method::POST,
            "/v1/conversations",
            Some(json!({"contact_id": contact, "channel": "sms"})),
        )
        .await;
    assert!(status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::NOT_FOUND, "{status}");
    // Lists, counts, the log and the token list show only the other tenant's own things.
    let (_, list) = intruder.call(&server, Method::GET, "/v1/conversations", None).await;
    assert_eq!(list["data"], json!([]));
    let (_, counts) = intruder.call(&server, Method::GET, "/v1/conversations/counts", None).await;
    assert_eq!(counts["all"], 0);
    let (_, log) = intruder.call(&server, Method::GET, "/v1/events", None).await;
    assert!(
        log["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant"] == "other" || e["metadata"]["tenant_id"] == "other"),
        "{log}"
    );
    assert!(!log.to_string().contains(&conversation));
    let (_, listed) = intruder.call(&server, Method::GET, "/v1/tokens", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    // The owner still sees everything.
    assert_eq!(server.get(&format!("/v1/conversations/{conversation}")).await.body["subject"], "Order");
    server.stop().await;
}

async fn a_token_acting_for_an_agent_records_both(backend: Backend) {
    let server = TestServer::start(backend).await;
    let conversation = server.conversation().await;
    let path = format!("/v1/conversations/{conversation}/assignment");
    let assigned = server
        .call_with(
            Method::POST,
            &path,
            Some(json!({"assignee_id": "agent-42"})),
            &[("Colloquy-On-Behalf-Of", "agent-42")],
        )
        .await;
    assert_eq!(assigned.status, StatusCode::OK, "{:?}", assigned.body);
    let refused = server
        .call_with(
            Method::POST,
            &path,
            Some(json!({"assignee_id": "agent-7"})),
            &[("Colloquy-On-Behalf-Of", "agent 42")],
        )
        .await;
    assert!(refused.assert_problem(StatusCode::BAD_REQUEST).contains("Colloquy-On-Behalf-Of"));

    let events = server.all_events("conversations", &conversation.to_string()).await;
    assert_eq!(events.len(), 2, "the refused request appended nothing");
    let (opened, by_agent) = (&events[0]["metadata"], &events[1]["metadata"]);
    assert_eq!(opened["actor_kind"], "token");
    assert!(opened.get("via_token").is_none(), "{opened:?}");
    assert_eq!(by_agent["actor_kind"], "user");
    assert_eq!(by_agent["actor_id"], "agent-42");
    assert_eq!(
        by_agent["via_token"], opened["actor_id"],
        "the token that acted is recorded beside the agent"
    );
    server.stop().await;
}

/// A participant given by number becomes a contact whose id is derived from the number with the
/// store's secret: another tenant that computes the id without it (from tenant and number alone,
/// as before) and takes it first blocks nothing.
async fn a_number_cannot_be_taken_by_another_tenant_first(backend: Backend) {
    use sha2::{Digest, Sha256};
    let server = TestServer::start(backend).await;
    let number = "+5511999990077";
    let digest = Sha256::digest(format!("colloquy/phone-contact/default/{number}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let guessed = uuid::Builder::from_custom_bytes(bytes).into_uuid();

    let squatter = admin_of_tenant_other(&server, "squatter").await;
    let (status, body) = squatter
        .call(&server, Method::POST, "/v1/contacts", Some(json!({"id": guessed, "first_name": "Squatter"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let inbox = server.contact().await;
    let group = server
        .post(
            "/v1/groups",
            json!({"inbox_id": "wa", "inbox_contact_id": inbox, "subject": "Mine", "participants": [number]}),
        )
        .await;
    assert_eq!(group.status, StatusCode::CREATED, "{:?}", group.body);
    let members = server.get(&format!("/v1/groups/{}/members", group.body["id"].as_str().unwrap())).await;
    let ids: Vec<&str> =
        members.body["data"].as_array().unwrap().iter().map(|m| m["contact_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{:?}", members.body);
    assert!(!ids.contains(&guessed.to_string().as_str()), "the number's contact is not the guessable id");
    server.stop().await;
}

/// The caller's list, when it holds one row whose contact's name starts with `name`.
async fn only_row(server: &TestServer, caller: &Caller, name: &str) -> Option<Value> {
    let (_, page) = caller.call(server, Method::GET, "/v1/conversations", None).await;
    let rows = page["data"].as_array().cloned().unwrap_or_default();
    let named = |row: &Value| row["contact"]["name"].as_str().is_some_and(|n| n.starts_with(name));
    (rows.len() == 1 && named(&rows[0])).then(|| rows[0].clone())
}

/// A stream is keyed by its tenant (docs/adr/0003): ids one tenant chose are free in another,
/// which learns nothing of the first's. Each tenant's contact, conversation and group under the
/// same ids are its own, in the aggregates, the inbox list (with its contact summaries), the
/// counts and the memberships; a change in one reaches nothing of the other. (Before, the second
/// tenant's create answered 409.)
async fn the_same_ids_in_two_tenants_are_two_of_each(backend: Backend) {
    let server = TestServer::start(backend).await;
    let theirs = admin_of_tenant_other(&server, "other-admin").await;
    let (contact, conversation, group) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let member = uuid::Uuid::now_v7();

    // Ours first, then theirs under the same ids: each create succeeds.
    for (name, subject) in [("Ann", "Ours"), ("Bea", "Theirs")] {
        let creates = [
            ("/v1/contacts", json!({"id": contact, "first_name": name})),
            ("/v1/contacts", json!({"id": member, "first_name": format!("{name}'s friend")})),
            (
                "/v1/conversations",
                json!({"id": conversation, "contact_id": contact, "channel": "sms", "subject": subject}),
            ),
            (
                "/v1/groups",
                json!({"id": group, "inbox_id": "wa", "inbox_contact_id": contact, "subject": subject,
                       "participants": [member]}),
            ),
        ];
        for (path, body) in creates {
            let (status, answer) = if subject == "Ours" {
                let reply = server.post(path, body).await;
                (reply.status, reply.body)
            } else {
                theirs.call(&server, Method::POST, path, Some(body)).await
            };
            assert_eq!(status, StatusCode::CREATED, "{subject}: POST {path}: {answer}");
        }
    }
    // The same id again in one tenant is still taken.
    let again = theirs
        .call(&server, Method::POST, "/v1/contacts", Some(json!({"id": contact, "first_name": "Cy"})))
        .await;
    assert_eq!(again.0, StatusCode::CONFLICT, "{}", again.1);

    // A change in theirs reaches nothing of ours.
    let (status, body) = theirs
        .call(
            &server,
            Method::POST,
            &format!("/v1/conversations/{conversation}/status"),
            Some(json!({"status": "closed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = theirs
        .call(&server, Method::PATCH, &format!("/v1/contacts/{contact}"), Some(json!({"first_name": "Bee"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let ours = server.get(&format!("/v1/conversations/{conversation}")).await;
    assert_eq!((ours.body["subject"].as_str(), ours.body["status"].as_str()), (Some("Ours"), Some("open")));
    assert_eq!(server.get(&format!("/v1/contacts/{contact}")).await.body["first_name"], "Ann");
    let events = server.all_events("conversations", &conversation.to_string()).await;
    assert_eq!(events.len(), 1, "only our opening: {events:?}");
    let (_, mine) =
        theirs.call(&server, Method::GET, &format!("/v1/conversations/{conversation}"), None).await;
    assert_eq!((mine["subject"].as_str(), mine["status"].as_str()), (Some("Theirs"), Some("closed")));

    // The read models hold one row of each, each with its own tenant's contact.
    let owner = Caller::new(Some(&server.token));
    let row = common::eventually(std::time::Duration::from_secs(10), "our row, with Ann", || {
        only_row(&server, &owner, "Ann")
    })
    .await;
    assert_eq!((row["subject"].as_str(), row["status"].as_str()), (Some("Ours"), Some("open")), "{row}");
    let row = common::eventually(std::time::Duration::from_secs(10), "their row, with Bee", || {
        only_row(&server, &theirs, "Bee")
    })
    .await;
    assert_eq!((row["subject"].as_str(), row["status"].as_str()), (Some("Theirs"), Some("closed")), "{row}");
    let counts = server.get("/v1/conversations/counts").await;
    let (all, open) = (counts.body["all"].as_i64(), counts.body["by_status"]["open"].as_i64());
    assert_eq!((all, open), (Some(1), Some(1)), "{:?}", counts.body);
    for caller in [&owner, &theirs] {
        let path = format!("/v1/contacts/{member}/groups");
        let groups =
            common::eventually(std::time::Duration::from_secs(10), "the member's one group", || async {
                let (_, page) = caller.call(&server, Method::GET, &path, None).await;
                let groups = page["data"].as_array().cloned().unwrap_or_default();
                (!groups.is_empty()).then_some(groups)
            })
            .await;
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert_eq!(groups[0]["group_id"], json!(group));
    }
    server.stop().await;
}

/// A store from before streams were keyed by their tenant (migration 20261206000015) keeps its
/// events and its read models' rows; afterwards a taken sequence is still a conflict in its own
/// tenant, and the same ids are free in another, in the events and in every read model keyed
/// by an aggregate's id.
async fn a_store_from_before_tenant_keyed_streams_keeps_its_rows_and_frees_the_ids(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let dialect = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    // The migrations before it, as files of their own (the same bytes, so the same checksums).
    let earlier = dir.path().join("earlier-migrations");
    std::fs::create_dir(&earlier).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/migrations").join(dialect);
    for file in std::fs::read_dir(all).unwrap() {
        let file = file.unwrap();
        if file.file_name().to_string_lossy().as_ref() < "20261206000015" {
            std::fs::copy(file.path(), earlier.join(file.file_name())).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(earlier.as_path()).await.unwrap();
    let event = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 VALUES ('conversation', 'a', 1, 'ConversationDeleted', '1.0', '{\"ConversationDeleted\":{}}',
                         '{\"tenant_id\": \"acme\"}')";
    let contact =
        "INSERT INTO conversation_list_contacts (contact_id, tenant_id, name) VALUES ('k', $1, 'Ann')";
    let member = "INSERT INTO group_members (tenant_id, group_id, contact_id, role, since)
                  VALUES ($1, 'g', 'k', 'member', '2026-12-01T00:00:00Z')";
    let database = match backend {
        Backend::Postgres => Some(common::TestDatabase::create().await),
        Backend::Sqlite => None,
    };
    let location = match &database {
        Some(database) => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            sqlx::query(event).execute(&pool).await.unwrap();
            sqlx::query(contact).bind("acme").execute(&pool).await.unwrap();
            sqlx::query(member).bind("acme").execute(&pool).await.unwrap();
            assert!(sqlx::query(contact).bind("other").execute(&pool).await.is_err(), "keyed by id alone");
            pool.close().await;
            colloquy_infra::StoreLocation::Postgres { url: database.url.clone(), max_connections: 4 }
        }
        None => {
            let path = dir.path().join("colloquy.db");
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            migrator.run(&pool).await.unwrap();
            sqlx::query(event).execute(&pool).await.unwrap();
            sqlx::query(contact).bind("acme").execute(&pool).await.unwrap();
            sqlx::query(member).bind("acme").execute(&pool).await.unwrap();
            assert!(sqlx::query(contact).bind("other").execute(&pool).await.is_err(), "keyed by id alone");
            pool.close().await;
            colloquy_infra::StoreLocation::Sqlite { path }
        }
    };

    let store = Store::open(&location).await.unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let kept = store.load::<colloquy_domain::Conversation>(&acme, "a").await.unwrap();
    assert_eq!(kept.len(), 1);
    let other = TenantId::parse("other").unwrap();
    assert!(store.load::<colloquy_domain::Conversation>(&other, "a").await.unwrap().is_empty());
    let mut theirs = common::deleted_event("a", 1, "test");
    theirs.metadata["tenant_id"] = json!("other");
    store.append(vec![theirs]).await.unwrap();
    let mut again = common::deleted_event("a", 1, "test");
    again.metadata["tenant_id"] = json!("acme");
    let taken = store.append(vec![again]).await;
    assert!(matches!(taken, Err(cqrs_es::persist::PersistenceError::OptimisticLockError)), "{taken:?}");
    assert_eq!(store.load::<colloquy_domain::Conversation>(&other, "a").await.unwrap().len(), 1);

    let count = "SELECT count(*) FROM conversation_list_contacts";
    macro_rules! check_read_models {
        ($pool:expr) => {{
            let pool = $pool;
            sqlx::query(contact).bind("other").execute(pool).await.unwrap();
            sqlx::query(member).bind("other").execute(pool).await.unwrap();
            assert!(sqlx::query(contact).bind("acme").execute(pool).await.is_err(), "still one per tenant");
            let rows: i64 = sqlx::query_scalar(count).fetch_one(pool).await.unwrap();
            assert_eq!(rows, 2);
        }};
    }
    match store.reads() {
        colloquy_infra::store::Reads::Postgres(pool) => check_read_models!(pool),
        colloquy_infra::store::Reads::Sqlite(pool) => check_read_models!(pool),
    }
    store.close().await;
}

on_both_stores!(
    a_store_from_before_tenant_keyed_streams_keeps_its_rows_and_frees_the_ids,
    scopes_and_token_states_decide_access,
    the_same_ids_in_two_tenants_are_two_of_each,
    another_tenant_sees_nothing_of_this_one,
    a_number_cannot_be_taken_by_another_tenant_first,
    a_token_acting_for_an_agent_records_both
);
