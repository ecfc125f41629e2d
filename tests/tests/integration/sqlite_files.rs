//! The embedded store's two files: events in `colloquy.db`, read models and their checkpoints in
//! `colloquy.read-models.db`, so that projectors write while commands append. A store from before
//! the split has its read-model tables moved, rows and indexes with them, when it is opened.

#![allow(clippy::unwrap_used)]

use crate::common;

use cqrs_es::persist::PersistenceError;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};

use colloquy_domain::TenantId;
use colloquy_infra::log::GlobalLog;
use colloquy_infra::store::{sqlite_read_models_path, STORE_READ_MODEL_TABLES};
use colloquy_infra::{Store, StoreLocation};

/// Every table of the read models' side: infra's own and those the projections declare.
fn read_model_tables() -> Vec<String> {
    let mut tables: Vec<String> = STORE_READ_MODEL_TABLES
        .into_iter()
        .chain(colloquy_projections::read_model_tables())
        .map(str::to_owned)
        .collect();
    tables.sort();
    tables
}

/// A pool on one file, as the store opened it before (WAL, nothing attached).
async fn open_file(path: &std::path::Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    SqlitePool::connect_with(options).await.unwrap()
}

async fn tables_in(pool: &SqlitePool, schema: &str) -> Vec<String> {
    let sql = format!("SELECT name FROM {schema}.sqlite_master WHERE type = 'table' ORDER BY name");
    let names: Vec<String> = sqlx::query_scalar(&sql).fetch_all(pool).await.unwrap();
    names.into_iter().filter(|name| read_model_tables().contains(name)).collect()
}

async fn indexes_in(pool: &SqlitePool, schema: &str) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT tbl_name, name FROM {schema}.sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name"
    );
    let indexes: Vec<(String, String)> = sqlx::query_as(&sql).fetch_all(pool).await.unwrap();
    indexes.into_iter().filter(|(table, _)| read_model_tables().contains(table)).collect()
}

async fn check_moved(store: &Store, indexes: &[(String, String)]) {
    let pool = store.reads().sqlite().unwrap();
    assert!(tables_in(pool, "main").await.is_empty(), "no read-model table is left beside the events");
    assert_eq!(tables_in(pool, "read_models").await, read_model_tables());
    assert_eq!(indexes_in(pool, "read_models").await, indexes, "every index moved with its table");
    let position: i64 = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = 'projection:old'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(position, 42);
    let stale: i64 = sqlx::query_scalar("SELECT count(*) FROM checkpoints WHERE name = 'projection:stale'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(stale, 0, "a copy a crash left behind is replaced by the events' file's table");
    let count: i64 =
        sqlx::query_scalar("SELECT count FROM conversation_counts WHERE tenant_id = 't' AND status = 'open'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(count, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_the_split_moves_its_read_models_with_their_rows_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("colloquy.db");
    // The layout before: every migration applied to the one file, nothing attached.
    let old = open_file(&path).await;
    sqlx::migrate!("../infra/migrations/sqlite").run(&old).await.unwrap();
    sqlx::query("INSERT INTO checkpoints (name, position) VALUES ('projection:old', 42)")
        .execute(&old)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO conversation_counts (tenant_id, status, assignee_id, count) VALUES ('t', 'open', '', 7)",
    )
    .execute(&old)
    .await
    .unwrap();
    let indexes = indexes_in(&old, "main").await;
    assert!(indexes.iter().any(|(table, _)| table == "conversation_list"), "{indexes:?}");
    old.close().await;
    // A crash between a move's copy and its drop leaves a copy in the read models' file too.
    let leftover = open_file(&sqlite_read_models_path(&path)).await;
    sqlx::query("CREATE TABLE checkpoints (name text PRIMARY KEY, position integer NOT NULL)")
        .execute(&leftover)
        .await
        .unwrap();
    sqlx::query("INSERT INTO checkpoints VALUES ('projection:stale', 1)").execute(&leftover).await.unwrap();
    leftover.close().await;

    let location = StoreLocation::Sqlite { path: path.clone() };
    let store = colloquy_projections::open_store(&location).await.unwrap();
    check_moved(&store, &indexes).await;
    // The generated column is computed in its new home.
    let pool = store.reads().sqlite().unwrap();
    let generated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pragma_table_xinfo('conversation_list', 'read_models') WHERE name = 'search' AND hidden = 3",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(generated, 1);
    store.close().await;
    assert!(sqlite_read_models_path(&path).exists());

    // Opening it again moves nothing and loses nothing.
    let store = colloquy_projections::open_store(&location).await.unwrap();
    check_moved(&store, &indexes).await;
    store.close().await;
}

/// A new migration creates its tables in the events' file; a read-model table must be declared
/// (by its projection's `Projection::tables`, or in infra's `STORE_READ_MODEL_TABLES`) to be
/// moved and cleared. This fails for a table that is neither, so the choice is made when the
/// table is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_of_a_new_store_is_either_an_events_table_or_a_moved_read_model() {
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::Sqlite { path: dir.path().join("colloquy.db") };
    let store = colloquy_projections::open_store(&location).await.unwrap();
    let pool = store.reads().sqlite().unwrap();
    let events_side: Vec<String> =
        sqlx::query_scalar("SELECT name FROM main.sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        events_side,
        [
            "_sqlx_migrations",
            "api_tokens",
            "event_hashes",
            "events",
            "idempotency_keys",
            // The contacts' data keys, destroyed in the commit of an erasure (docs/adr/0011).
            "personal_keys",
            "personal_master_keys",
            "sqlite_sequence",
            "store_identity",
            "tenant_counters",
            "tenants",
            // Webhooks' signing secrets, sealed under the master key (docs/adr/0012).
            "webhook_secrets"
        ],
        "a table that is neither an events table nor a declared read-model table"
    );
    let read_models: Vec<String> =
        sqlx::query_scalar("SELECT name FROM read_models.sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(read_models, read_model_tables());
    store.close().await;
}

/// Before migration 20261201000010 a position lived in `event_log`, an AUTOINCREMENT table a
/// trigger filled; since, it is the events' own key. A store from before keeps every position
/// (gaps too), its commit times and its tenants' pages, and appends continue after its head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_positioned_events_keeps_every_position_and_appends_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("colloquy.db");
    let old = open_file(&path).await;
    // The migrations before it, as files of their own (the same bytes, so the same checksums).
    let earlier = dir.path().join("earlier-migrations");
    std::fs::create_dir(&earlier).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/migrations/sqlite");
    for file in std::fs::read_dir(all).unwrap() {
        let file = file.unwrap();
        if file.file_name().to_string_lossy().as_ref() < "20261201000010" {
            std::fs::copy(file.path(), earlier.join(file.file_name())).unwrap();
        }
    }
    Migrator::new(earlier.as_path()).await.unwrap().run(&old).await.unwrap();
    let insert = |id: &str, sequence: i64, tenant: &str| {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ('conversation', ?, ?, 'ConversationDeleted', '1.0', '{\"ConversationDeleted\":{}}', json_object('tenant_id', ?))",
        )
        .bind(id.to_owned())
        .bind(sequence)
        .bind(tenant.to_owned())
    };
    insert("a", 1, "acme").execute(&old).await.unwrap();
    insert("b", 1, "other").execute(&old).await.unwrap();
    insert("a", 2, "acme").execute(&old).await.unwrap();
    // A gap in the old log's positions (its AUTOINCREMENT counter moved on) must stay a gap.
    sqlx::query("UPDATE sqlite_sequence SET seq = 100 WHERE name = 'event_log'").execute(&old).await.unwrap();
    insert("b", 2, "other").execute(&old).await.unwrap();
    insert("a", 3, "acme").execute(&old).await.unwrap();
    let recorded: Vec<(i64, String)> =
        sqlx::query_as("SELECT position, recorded_at FROM event_log ORDER BY position")
            .fetch_all(&old)
            .await
            .unwrap();
    assert_eq!(recorded.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [1, 2, 3, 101, 102]);
    old.close().await;

    let store = Store::open(&StoreLocation::Sqlite { path: path.clone() }).await.unwrap();
    let log = GlobalLog::start(store.clone()).await.unwrap();
    assert_eq!(log.head(), 102);
    let page = log.read(0, 100, None).await.unwrap();
    let read: Vec<(i64, &str, i64)> =
        page.iter().map(|e| (e.position.unwrap(), e.aggregate_id.as_str(), e.sequence)).collect();
    assert_eq!(read, [(1, "a", 1), (2, "b", 1), (3, "a", 2), (101, "b", 2), (102, "a", 3)]);
    let acme = TenantId::parse("acme").unwrap();
    let tenants_page = log.read(1, 100, Some(&acme)).await.unwrap();
    assert_eq!(tenants_page.iter().map(|e| e.position.unwrap()).collect::<Vec<_>>(), [3, 102]);
    let stream = store.stream_page(&acme, "conversation", "a", 0, 10).await.unwrap();
    assert_eq!(stream.iter().map(|e| e.position.unwrap()).collect::<Vec<_>>(), [1, 3, 102]);
    let pool = store.reads().sqlite().unwrap();
    let kept: Vec<(i64, String)> =
        sqlx::query_as("SELECT position, recorded_at FROM event_log ORDER BY position")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(kept, recorded, "the log's view gives the old log's positions and commit times");

    // Appends continue after the head; a taken sequence is still a conflict; events stay facts.
    let position = store.append(vec![common::deleted_event("b", 3, "test")]).await.unwrap();
    assert_eq!(position, 103);
    let mut taken = common::deleted_event("a", 3, "test");
    taken.metadata["tenant_id"] = "acme".into();
    let taken = store.append(vec![taken]).await;
    assert!(matches!(taken, Err(PersistenceError::OptimisticLockError)), "{taken:?}");
    assert!(sqlx::query("DELETE FROM events").execute(pool).await.is_err());
    assert!(sqlx::query("UPDATE events SET payload = '{}'").execute(pool).await.is_err());
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await.unwrap();
    assert_eq!(count, 6);
    store.close().await;
}
