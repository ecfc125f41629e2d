//! Erasure without rewriting history (docs/adr/0011), on both stores: a contact's personal
//! data, once erased, reads as erased in every read (the contact, its messages, the inbox, the
//! log, a point in time before the erasure), in every read model rebuilt from the log, and in
//! an export; the rest of its history is whole (counts, statuses, another contact's data), the
//! hash chain still verifies, and none of its plaintext is left in the database's files.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use colloquy_domain::TenantId;
use colloquy_infra::audit;
use colloquy_infra::{GlobalLog, Store};

use crate::common::{self, Backend, TestServer};

/// What the contact wrote or is: each a string found nowhere else.
struct Secrets {
    first_name: String,
    last_name: String,
    email: String,
    phone: String,
    street: String,
    said: String,
    file: String,
    edited: String,
}

impl Secrets {
    fn new() -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let digits: u32 = rand::random::<u32>() % 10_000_000;
        Self {
            first_name: format!("Zebulon{}", &tag[..10]),
            last_name: format!("Quimby{}", &tag[10..20]),
            email: format!("zq{}@example.com", &tag[20..30]),
            phone: format!("+4420{digits:07}"),
            street: format!("street{}", &tag[..12]),
            said: format!("mycard{}", &tag[12..24]),
            file: format!("passport{}.pdf", &tag[4..16]),
            edited: format!("edited{}", &tag[16..28]),
        }
    }

    fn all(&self) -> [&str; 8] {
        [
            &self.first_name,
            &self.last_name,
            &self.email,
            &self.phone,
            &self.street,
            &self.said,
            &self.file,
            &self.edited,
        ]
    }

    /// The secrets `text` holds.
    fn found_in(&self, text: &str) -> Vec<String> {
        self.all().iter().filter(|s| text.contains(**s)).map(|s| (*s).to_owned()).collect()
    }
}

/// Conversation `id`'s inbox row once the list has applied `position`.
async fn row(server: &TestServer, id: &str, position: i64) -> Value {
    let listed = server.get(&format!("/v1/conversations?min_position={position}&limit=100")).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let rows = listed.body["data"].as_array().unwrap();
    rows.iter().find(|r| r["id"] == id).cloned().unwrap_or_else(|| panic!("no {id} in {rows:?}"))
}

fn position(reply: &common::Reply) -> i64 {
    assert!(reply.status.is_success(), "{:?}", reply.body);
    reply.headers["colloquy-position"].to_str().unwrap().parse().unwrap()
}

/// The files of the store, as bytes, with their names: SQLite's two files and their logs; on
/// PostgreSQL the test database's directory, once every table is rewritten (VACUUM FULL, as an
/// operator finishes an erasure there; the server's WAL is the ADR's caveat).
async fn store_files(server: &TestServer, backend: Backend) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let dir = match backend {
        Backend::Sqlite => server.config().data_dir.clone(),
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(server.database_url().unwrap()).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            for table in tables.iter().map(String::as_str).chain(["pg_catalog.pg_statistic"]) {
                sqlx::query(&format!("VACUUM FULL {table}")).execute(&pool).await.unwrap();
            }
            sqlx::query("CHECKPOINT").execute(&pool).await.unwrap();
            let (data, oid): (String, sqlx::postgres::types::Oid) = sqlx::query_as(
                "SELECT current_setting('data_directory'), oid FROM pg_database WHERE datname = current_database()",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            pool.close().await;
            std::path::Path::new(&data).join("base").join(oid.0.to_string())
        }
    };
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap_or_default()));
        }
    }
    assert!(!files.is_empty(), "no files in {}", dir.display());
    files
}

/// The secrets left in the store's files. On PostgreSQL, VACUUM FULL keeps a row version that a
/// transaction may still see (the cluster is shared with other tests' databases), so the files
/// are vacuumed again, for up to 30 s, until none is left.
async fn left_in_files(server: &TestServer, backend: Backend, secrets: &Secrets) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let found = plaintext_in(&store_files(server, backend).await, secrets);
        if found.is_empty() || backend == Backend::Sqlite || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The secrets any of the files holds, with the file's name.
fn plaintext_in(files: &[(String, Vec<u8>)], secrets: &Secrets) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (name, bytes) in files {
        for secret in secrets.all() {
            if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                found.push((name.clone(), secret.to_owned()));
            }
        }
    }
    found
}

async fn an_erased_contact_reads_as_erased_everywhere_and_history_stays_whole(backend: Backend) {
    // Snapshots every two events, so the contact's and its conversation's are taken.
    let mut server = TestServer::start_with(backend, |config| config.snapshot_every = 2).await;
    let secrets = Secrets::new();
    let created = server
        .call_with(
            Method::POST,
            "/v1/contacts",
            Some(json!({"first_name": secrets.first_name, "last_name": secrets.last_name, "email": secrets.email,
                        "phone": secrets.phone, "metadata": {"street": secrets.street}, "labels": ["vip"]})),
            &[("idempotency-key", "erasure-contact")],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let contact = created.body["id"].as_str().unwrap().to_owned();
    let kept = server.conversation().await;
    let opened =
        server.post("/v1/conversations", json!({"contact_id": contact, "channel": "whatsapp"})).await;
    let conversation = opened.body["id"].as_str().unwrap().to_owned();
    let messages = format!("/v1/conversations/{conversation}/messages");
    let reply = server
        .post(
            &messages,
            json!({"sender": {"kind": "user", "id": "agent-1"}, "text": "An agent's answer stays"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let file = server
        .post(
            &messages,
            json!({"sender": {"kind": "customer"}, "type": "media", "text": null,
                   "attachments": [{"url": format!("https://files.example.com/{}", secrets.file), "name": secrets.file}]}),
        )
        .await;
    assert_eq!(file.status, StatusCode::CREATED, "{:?}", file.body);
    let card = server.post(&messages, json!({"sender": {"kind": "customer"}, "text": secrets.said})).await;
    let card_id = card.body["id"].as_str().unwrap().to_owned();
    let edit = server.patch(&format!("{messages}/{card_id}"), json!({"text": secrets.edited})).await;
    let before = position(&edit);
    let shown = row(&server, &conversation, before).await;
    assert_eq!(shown["contact"]["name"], format!("{} {}", secrets.first_name, secrets.last_name), "{shown}");
    assert!(!secrets.found_in(&shown["last_message"]["preview"].to_string()).is_empty(), "{shown}");
    // Reads reveal every value; as stored, each is sealed.
    let all = server.get("/v1/events?limit=1000").await;
    assert_eq!(secrets.found_in(&all.body.to_string()).len(), secrets.all().len(), "{}", all.body);
    let store = server.config().open_store(&[]).await.unwrap();
    let stored = colloquy_infra::log::read_page(&store, 0, 1000).await.unwrap();
    assert!(secrets.found_in(&format!("{stored:?}")).is_empty(), "{stored:?}");
    store.close().await;

    // Only a token with `contacts:erase` erases.
    let store = server.config().open_store(&[]).await.unwrap();
    let writer = colloquy_infra::tokens::create_token(
        &store,
        &common::default_tenant(),
        "writer",
        &["contacts:write".to_owned()],
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    store.close().await;
    let refused = server
        .client
        .post(server.url(&format!("/v1/contacts/{contact}/erase")))
        .bearer_auth(&writer.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // The read models hold the plaintext until the erasure (which is what the grep below finds).
    // (On PostgreSQL this VACUUM FULL leaves no older copy either.)
    let held = plaintext_in(&store_files(&server, backend).await, &secrets);
    assert!(held.iter().any(|(_, secret)| *secret == secrets.email), "{held:?}");
    let erased = server.post(&format!("/v1/contacts/{contact}/erase"), json!({})).await;
    let erased_at = position(&erased);
    assert_eq!(erased.body["first_name"], "[erased]", "{:?}", erased.body);
    assert_eq!((&erased.body["email"], &erased.body["phone"]), (&Value::Null, &Value::Null));
    assert_eq!(erased.body["metadata"], json!({}));
    assert_eq!(erased.body["labels"], json!(["vip"]), "labels are the tenant's");
    assert!(erased.body["erased_at"].is_string(), "{:?}", erased.body);
    let again = server.post(&format!("/v1/contacts/{contact}/erase"), json!({})).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.headers.get("colloquy-position").is_none(), "a second erase records nothing");
    let patched = server.patch(&format!("/v1/contacts/{contact}"), json!({"first_name": "Back"})).await;
    patched.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);

    // Every read: the contact, now and before the erasure; its messages; the inbox; the log.
    let now = server.get(&format!("/v1/contacts/{contact}")).await;
    let then = server.get(&format!("/v1/contacts/{contact}?at_position={before}")).await;
    for read in [&now, &then] {
        assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
        assert!(secrets.found_in(&read.body.to_string()).is_empty(), "{}", read.body);
        assert_eq!(read.body["full_name"], "[erased]");
    }
    let listed = server.get(&messages).await;
    assert!(secrets.found_in(&listed.body.to_string()).is_empty(), "{}", listed.body);
    let texts: Vec<&Value> = listed.body["data"].as_array().unwrap().iter().map(|m| &m["text"]).collect();
    // An edit's text is required: it reads as the marker.
    assert_eq!(texts, [&json!("An agent's answer stays"), &Value::Null, &json!("[erased]")]);
    let shown = row(&server, &conversation, erased_at).await;
    assert_eq!(shown["contact"]["name"], "[erased]", "{shown}");
    assert_eq!(shown["message_count"], 3, "history stays whole: {shown}");
    assert_eq!(shown["last_message"]["preview"], Value::Null, "{shown}");
    assert_eq!(shown["last_message"]["sender_kind"], "customer", "{shown}");
    let listed = server.get(&format!("/v1/conversations?min_position={erased_at}&limit=100")).await;
    assert!(secrets.found_in(&listed.body.to_string()).is_empty(), "{}", listed.body);
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 2);
    let all = server.get("/v1/events?limit=1000").await;
    assert!(secrets.found_in(&all.body.to_string()).is_empty(), "{}", all.body);
    assert!(all.body.to_string().contains("ContactErased"));
    let other = server.get(&format!("/v1/conversations/{kept}")).await;
    assert_eq!(other.body["contact"]["name"], "Ann Lee", "another contact's data stays");
    // SQLite: at once, the server running. PostgreSQL: VACUUM FULL keeps a row version that a
    // running transaction's snapshot may still see, so its files are read once the server stops.
    if backend == Backend::Sqlite {
        let live = store_files(&server, backend).await;
        assert_eq!(plaintext_in(&live, &secrets), Vec::<(String, String)>::new(), "right after the erasure");
    }
    server.shut_down().await;
    if backend == Backend::Postgres {
        assert_eq!(
            left_in_files(&server, backend, &secrets).await,
            Vec::<(String, String)>::new(),
            "once vacuumed"
        );
    }

    // Every read model rebuilt from the log, an export of it, and the chain.
    let store = server.config().open_store(&[]).await.unwrap();
    let log = GlobalLog::start(store.clone()).await.unwrap();
    for projection in colloquy_projections::all() {
        colloquy_projections::Projector::new(log.clone(), projection).rebuild(|_| {}).await.unwrap();
    }
    let rows = colloquy_projections::conversation_list::dump(&store).await.unwrap();
    assert!(secrets.found_in(&format!("{rows:?}")).is_empty(), "{rows:?}");
    assert!(format!("{rows:?}").contains("[erased]"), "{rows:?}");
    let tenant = TenantId::parse("default").unwrap();
    let (mut exported, mut after) = (Vec::new(), 0);
    loop {
        let page = audit::page(&store, Some(&tenant), after).await.unwrap();
        let Some(last) = page.last().map(|e| e.position) else { break };
        exported.extend(page.iter().filter_map(audit::Exported::of));
        after = last;
    }
    let text: String = exported.iter().map(|e| serde_json::to_string(e).unwrap()).collect();
    assert!(secrets.found_in(&text).is_empty(), "the export holds the values sealed");
    let count = u64::try_from(exported.len()).unwrap();
    assert!(count >= u64::try_from(erased_at).unwrap());
    assert_eq!(audit::verify_exported(exported.into_iter()).ok(), Some(count), "the export verifies");
    let verified = audit::verify(&store, None, 1, &[], |_| {}).await.unwrap();
    assert_eq!(verified.broken, None, "the chain verifies after the erasure");
    store.close().await;
    assert_eq!(
        left_in_files(&server, backend, &secrets).await,
        Vec::<(String, String)>::new(),
        "after the rebuild"
    );
}

/// A store with no master key configured keeps one of its own; one opened with another master
/// key says so instead of reading every value as erased.
async fn a_master_key_other_than_the_one_that_wrapped_the_keys_is_named(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let conversation = server.conversation().await;
    server.customer_message(&conversation, "kept under the test's master key").await;
    server.shut_down().await;
    let store = Store::open(&server.config().store_location()).await.unwrap();
    let other = colloquy_infra::personal::MasterKey::generate();
    store.keys().configure(colloquy_infra::personal::MasterKey::from_base64(&other).unwrap());
    let read = colloquy_infra::log::read_page(&store, 0, 100).await.unwrap();
    let error = store.keys().reveal(&read).await.unwrap_err().to_string();
    assert!(error.contains("master key"), "{error}");
    store.close().await;
}

on_both_stores!(
    an_erased_contact_reads_as_erased_everywhere_and_history_stays_whole,
    a_master_key_other_than_the_one_that_wrapped_the_keys_is_named,
);
