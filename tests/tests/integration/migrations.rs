//! The two dialects' migrations describe one schema: from the first version that keeps to it on,
//! a version means the same change in both folders (an empty file where a dialect needs
//! nothing), and both migrated stores have the same tables with the same columns, less the
//! differences each dialect needs, listed here.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use crate::common;

use colloquy_infra::StoreLocation;

/// The first version from which both folders hold the same versions. The ones before were
/// numbered per dialect; renumbering them would break every store that applied them.
const PAIRED_FROM: &str = "20261205000013";

/// `version_description` of each migration in `dialect`'s folder, from [`PAIRED_FROM`] on.
fn migrations(dialect: &str) -> BTreeSet<String> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/migrations").join(dialect);
    std::fs::read_dir(folder)
        .unwrap()
        .map(|file| file.unwrap().file_name().to_string_lossy().trim_end_matches(".sql").to_owned())
        .filter(|name| name.as_str() >= PAIRED_FROM)
        .collect()
}

#[test]
fn every_migration_has_its_pair_in_the_other_dialect() {
    let (postgres, sqlite) = (migrations("postgres"), migrations("sqlite"));
    assert!(!postgres.is_empty());
    assert_eq!(postgres, sqlite, "the same versions, with the same descriptions, in both folders");
}

/// Every `table.column` of a migrated store: its tables and views, the read models' too.
async fn columns(location: &StoreLocation) -> BTreeSet<String> {
    let store = colloquy_projections::open_store(location).await.unwrap();
    let found: Vec<(String, String)> = match store.reads() {
        colloquy_infra::store::Reads::Postgres(pool) => sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
              WHERE table_schema = current_schema()",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        colloquy_infra::store::Reads::Sqlite(pool) => sqlx::query_as(
            "SELECT m.name, c.name FROM main.sqlite_master m JOIN pragma_table_xinfo(m.name, 'main') c
              WHERE m.type IN ('table', 'view')
             UNION ALL
             SELECT m.name, c.name FROM read_models.sqlite_master m JOIN pragma_table_xinfo(m.name, 'read_models') c
              WHERE m.type IN ('table', 'view')",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    };
    store.close().await;
    found.into_iter().map(|(table, column)| format!("{table}.{column}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_dialects_migrate_to_the_same_tables_and_columns() {
    let database = common::TestDatabase::create().await;
    let postgres = columns(&StoreLocation::Postgres { url: database.url.clone(), max_connections: 2 }).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = columns(&StoreLocation::Sqlite { path: dir.path().join("colloquy.db") }).await;
    let only_postgres: Vec<&String> = postgres.difference(&sqlite).collect();
    let only_sqlite: Vec<&String> = sqlite.difference(&postgres).collect();
    // What each dialect needs and the other does not.
    let postgres_needs = [
        // Commit order comes from transaction ids: a sequencer table and its state.
        "event_log.event_position",
        // The hash chain's links sit in the log's rows (SQLite's in `event_hashes`).
        "event_log.hash",
        "event_log_state.horizon",
        "event_log_state.last_position",
        "event_log_state.singleton",
        "events.xact_id",
    ];
    let sqlite_needs = [
        // The hash chain's links, which the writer inserts beside the events.
        "event_hashes.hash",
        "event_hashes.position",
        // The log is a view over the events, with their commit times.
        "event_log.recorded_at",
        // AUTOINCREMENT's counters.
        "sqlite_sequence.name",
        "sqlite_sequence.seq",
    ];
    assert_eq!(only_postgres, postgres_needs.iter().collect::<Vec<_>>(), "columns only PostgreSQL has");
    assert_eq!(only_sqlite, sqlite_needs.iter().collect::<Vec<_>>(), "columns only SQLite has");
}

/// Every connection of a PostgreSQL store plans each statement for its values: a generic plan
/// cached while a young store's tables were nearly empty walked a tenant's whole stream for one
/// event (docs/adr/0015).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_plans_every_statement_for_its_values() {
    let database = common::TestDatabase::create().await;
    let location = StoreLocation::Postgres { url: database.url.clone(), max_connections: 2 };
    let store = colloquy_projections::open_store(&location).await.unwrap();
    let Some(pool) = store.reads().postgres() else { panic!("a PostgreSQL store") };
    let mut modes = Vec::new();
    let (mut first, mut second) = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
    for connection in [&mut first, &mut second] {
        let mode: String =
            sqlx::query_scalar("SHOW plan_cache_mode").fetch_one(&mut **connection).await.unwrap();
        modes.push(mode);
    }
    assert_eq!(modes, ["force_custom_plan", "force_custom_plan"]);
    drop((first, second));
    store.close().await;
}

/// A store migrated to just before `version`, with `rows` (SQL statements) written into it as
/// a deployment of that time would have, at the location the next open migrates it from; the
/// directory and database live as long as the returned guards.
async fn store_before(
    backend: common::Backend,
    version: &str,
    rows: &[String],
) -> (tempfile::TempDir, Option<common::TestDatabase>, StoreLocation) {
    let dir = tempfile::tempdir().unwrap();
    let dialect = match backend {
        common::Backend::Sqlite => "sqlite",
        common::Backend::Postgres => "postgres",
    };
    let earlier = dir.path().join("earlier-migrations");
    std::fs::create_dir(&earlier).unwrap();
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/migrations").join(dialect);
    for file in std::fs::read_dir(all).unwrap() {
        let file = file.unwrap();
        if file.file_name().to_string_lossy().as_ref() < version {
            std::fs::copy(file.path(), earlier.join(file.file_name())).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(earlier.as_path()).await.unwrap();
    match backend {
        common::Backend::Postgres => {
            let database = common::TestDatabase::create().await;
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            for row in rows {
                sqlx::query(row).execute(&pool).await.unwrap();
            }
            pool.close().await;
            let location = StoreLocation::Postgres { url: database.url.clone(), max_connections: 4 };
            (dir, Some(database), location)
        }
        common::Backend::Sqlite => {
            let path = dir.path().join("colloquy.db");
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            migrator.run(&pool).await.unwrap();
            for row in rows {
                sqlx::query(row).execute(&pool).await.unwrap();
            }
            pool.close().await;
            (dir, None, StoreLocation::Sqlite { path })
        }
    }
}

/// A store from before the process managers' jobs table keeps its leaves as jobs of the
/// `group_conversations` process: the pending one still to do, the done one done (a rebuild
/// must not close that group's conversations again), each caused by its leave.
async fn leaves_from_before_the_jobs_table_become_jobs(backend: common::Backend) {
    let leaves = [("g-done", "e-done", 7, true), ("g-pending", "e-pending", 9, false)];
    let rows: Vec<String> = leaves
        .iter()
        .map(|(group, event, position, done)| {
            format!(
                "INSERT INTO group_leaves (tenant_id, group_id, leave_event_id, correlation_id, position, done)
                 VALUES ('acme', '{group}', '{event}', 'c-1', {position}, {done})"
            )
        })
        .collect();
    let (_dir, _database, location) = store_before(backend, "20261206000017", &rows).await;

    let store = colloquy_projections::open_store(&location).await.unwrap();
    let sql = "SELECT job_id, tenant_id, position, job, correlation_id, causation_id, done FROM process_jobs
               WHERE process = 'group_conversations' ORDER BY position";
    type Job = (String, String, i64, String, Option<String>, Option<String>, bool);
    let jobs: Vec<Job> =
        colloquy_infra::on_pool!(store, |pool| sqlx::query_as(sql).fetch_all(pool).await.unwrap());
    let jobs: Vec<_> = jobs
        .into_iter()
        .map(|(id, tenant, position, job, correlation, causation, done)| {
            let job: serde_json::Value = serde_json::from_str(&job).unwrap();
            (id, tenant, position, job["group_id"].as_str().unwrap().to_owned(), correlation, causation, done)
        })
        .collect();
    let expected: Vec<_> = leaves
        .iter()
        .map(|(group, event, position, done)| {
            let (event, c) = (event.to_string(), Some("c-1".to_owned()));
            (event.clone(), "acme".to_owned(), *position, group.to_string(), c, Some(event), *done)
        })
        .collect();
    assert_eq!(jobs, expected);
    let leaves_left: Option<String> = match store.reads() {
        colloquy_infra::store::Reads::Postgres(pool) => {
            sqlx::query_scalar("SELECT to_regclass('group_leaves')::text").fetch_one(pool).await.unwrap()
        }
        colloquy_infra::store::Reads::Sqlite(pool) => sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE name = 'group_leaves'
             UNION ALL SELECT name FROM read_models.sqlite_master WHERE name = 'group_leaves'",
        )
        .fetch_optional(pool)
        .await
        .unwrap(),
    };
    assert_eq!(leaves_left, None, "group_leaves is gone");
    store.close().await;
}

/// A store from before the SLA clocks' fire lane has its fire jobs, done and pending, moved to
/// the `sla_fire` process (a rebuild must find the done ones done), and its observe jobs left
/// with `sla`.
async fn fire_jobs_move_to_the_fire_lane(backend: common::Backend) {
    let jobs =
        [("sla", "fire/acme/c-1/first_response", true), ("sla", "fire/acme/c-2/first_response", false)];
    let observe = ("sla", "observe/acme/c-2", false);
    let rows: Vec<String> = jobs
        .iter()
        .chain([&observe])
        .enumerate()
        .map(|(position, (process, id, done))| {
            format!(
                "INSERT INTO process_jobs (process, job_id, tenant_id, subject, position, due_at, job, done)
                 VALUES ('{process}', '{id}', 'acme', NULL, {position}, 0, '{{}}', {done})"
            )
        })
        .collect();
    let (_dir, _database, location) = store_before(backend, "20261213000027", &rows).await;

    let store = colloquy_projections::open_store(&location).await.unwrap();
    let sql = "SELECT process, job_id, done FROM process_jobs ORDER BY position";
    let found: Vec<(String, String, bool)> =
        colloquy_infra::on_pool!(store, |pool| sqlx::query_as(sql).fetch_all(pool).await.unwrap());
    let expected = [
        ("sla_fire", "fire/acme/c-1/first_response", true),
        ("sla_fire", "fire/acme/c-2/first_response", false),
        ("sla", "observe/acme/c-2", false),
    ];
    let expected: Vec<_> =
        expected.iter().map(|(p, id, done)| (p.to_string(), id.to_string(), *done)).collect();
    assert_eq!(found, expected);
    store.close().await;
}

/// A store from before the reports' rollups has facts without cells: its reports' tables are
/// emptied and their checkpoints removed, so the projections build facts and cells again from the
/// log; the other projections' checkpoints stay.
async fn facts_from_before_the_rollups_are_built_again(backend: common::Backend) {
    let rows = vec![
        "INSERT INTO report_facts (tenant_id, version, end_position, metric, kind, conversation_id, contact_id,
                                   value, business_value, started_at, ended_at, start_position, agent_id,
                                   assignee_id, team_id, inbox_id, channel, priority, labels,
                                   group_conversation, bot, superseded_at)
         VALUES ('acme', 1, 2, 'first_response', NULL, 'c-1', 'p-1', 60, 60, '2026-12-01T09:00:00Z',
                 '2026-12-01T09:01:00Z', 1, 'ana', 'ana', NULL, 'support', 'email', 'medium', '[]',
                 false, false, NULL)"
            .to_owned(),
        "INSERT INTO checkpoints (name, position) VALUES ('projection:reports_v1', 2), ('projection:conversation_list', 2)"
            .to_owned(),
    ];
    let (_dir, _database, location) = store_before(backend, "20261214000028", &rows).await;

    let store = colloquy_projections::open_store(&location).await.unwrap();
    let facts: i64 = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query_scalar("SELECT count(*) FROM report_facts").fetch_one(pool).await.unwrap()
    });
    let cells: i64 = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query_scalar("SELECT count(*) FROM report_cells").fetch_one(pool).await.unwrap()
    });
    let checkpoints: Vec<String> = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query_scalar("SELECT name FROM checkpoints ORDER BY name").fetch_all(pool).await.unwrap()
    });
    assert_eq!((facts, cells), (0, 0));
    assert_eq!(checkpoints, ["projection:conversation_list"]);
    store.close().await;
}

/// A store whose rollups have no five-minute cells is emptied as well, so its summaries never
/// read five minutes with nothing in them: the reports build again from the log; the other
/// projections' checkpoints stay.
async fn rollups_without_five_minute_cells_are_built_again(backend: common::Backend) {
    rollups_from_before(backend, "20261215000029").await;
}

/// So is one whose dimension keys have no six-hour cells: its breakdowns would read six hours
/// with nothing in them.
async fn rollups_without_six_hour_key_cells_are_built_again(backend: common::Backend) {
    rollups_from_before(backend, "20261216000030").await;
}

/// Rollups stored before migration `before` are emptied by it, with their numbers and the
/// reports' checkpoints; the other projections' checkpoints stay.
async fn rollups_from_before(backend: common::Backend, before: &str) {
    let byte = match backend {
        common::Backend::Postgres => "'\\x00'::bytea",
        common::Backend::Sqlite => "x'00'",
    };
    let rows = vec![
        format!(
            "INSERT INTO report_cells (tenant_id, version, dimension, grain, start_at, metric, key, cell)
             VALUES ('acme', 1, '', 1, 1764547200, 'first_response', '', {byte})"
        ),
        "INSERT INTO report_numbers (tenant_id, version, kind, id, number) VALUES ('acme', 1, 'conversation', 'c-1', 1)"
            .to_owned(),
        "INSERT INTO checkpoints (name, position) VALUES ('projection:reports_v2', 2), ('projection:sla', 2)".to_owned(),
    ];
    let (_dir, _database, location) = store_before(backend, before, &rows).await;

    let store = colloquy_projections::open_store(&location).await.unwrap();
    let count = |table: &'static str| {
        let store = store.clone();
        async move {
            let sql = format!("SELECT count(*) FROM {table}");
            let count: i64 = colloquy_infra::on_pool!(store, |pool| sqlx::query_scalar(&sql)
                .fetch_one(pool)
                .await
                .unwrap());
            count
        }
    };
    assert_eq!((count("report_cells").await, count("report_numbers").await), (0, 0));
    let checkpoints: Vec<String> = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query_scalar("SELECT name FROM checkpoints ORDER BY name").fetch_all(pool).await.unwrap()
    });
    assert_eq!(checkpoints, ["projection:sla"]);
    store.close().await;
}

/// Numbers given before the heads table keep, each tenant's last per version and kind becomes
/// its head (the next number follows it), and a number stays unique.
async fn numbers_from_before_the_heads_keep_and_head_them(backend: common::Backend) {
    let numbers = [
        ("acme", 1, "conversation", "c-1", 1),
        ("acme", 1, "conversation", "c-2", 2),
        ("acme", 1, "contact", "p-1", 1),
        ("acme", 2, "conversation", "c-1", 1),
        ("zeta", 2, "conversation", "c-9", 1),
        ("zeta", 2, "conversation", "c-8", 2),
        ("zeta", 2, "conversation", "c-7", 3),
    ];
    let rows: Vec<String> = numbers
        .iter()
        .map(|(tenant, version, kind, id, number)| {
            format!(
                "INSERT INTO report_numbers (tenant_id, version, kind, id, number)
                 VALUES ('{tenant}', {version}, '{kind}', '{id}', {number})"
            )
        })
        .collect();
    let (_dir, _database, location) = store_before(backend, "20261217000031", &rows).await;

    let store = colloquy_projections::open_store(&location).await.unwrap();
    let sql =
        "SELECT tenant_id, CAST(version AS BIGINT), kind, last FROM report_number_heads ORDER BY tenant_id, version, kind";
    let heads: Vec<(String, i64, String, i64)> =
        colloquy_infra::on_pool!(store, |pool| sqlx::query_as(sql).fetch_all(pool).await.unwrap());
    let expected = [
        ("acme", 1, "contact", 1),
        ("acme", 1, "conversation", 2),
        ("acme", 2, "conversation", 1),
        ("zeta", 2, "conversation", 3),
    ];
    let expected: Vec<_> =
        expected.iter().map(|(t, v, k, last)| (t.to_string(), *v, k.to_string(), *last)).collect();
    assert_eq!(heads, expected);
    let kept: i64 =
        colloquy_infra::on_pool!(store, |pool| sqlx::query_scalar("SELECT count(*) FROM report_numbers")
            .fetch_one(pool)
            .await
            .unwrap());
    assert_eq!(kept, 7);
    let taken = "INSERT INTO report_numbers (tenant_id, version, kind, id, number) VALUES ('zeta', 2, 'conversation', 'c-6', 3)";
    let again = colloquy_infra::on_pool!(store, |pool| sqlx::query(taken).execute(pool).await.map(|_| ()));
    assert!(again.is_err(), "a number given twice is refused");
    store.close().await;
}

on_both_stores!(
    numbers_from_before_the_heads_keep_and_head_them,
    leaves_from_before_the_jobs_table_become_jobs,
    fire_jobs_move_to_the_fire_lane,
    facts_from_before_the_rollups_are_built_again,
    rollups_without_five_minute_cells_are_built_again,
    rollups_without_six_hour_key_cells_are_built_again
);
