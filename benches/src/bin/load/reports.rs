//! `load --reports`: what the reports cost and how fast they answer.
//!
//! 1. The pair: the command mix at each client count on a server that does not run the facts'
//!    projections (`COLLOQUY_SKIP_PROJECTIONS=reports_v1,reports_v2`), then on one that runs the newest, each on a
//!    fresh store of its own; then how long the facts take to catch up once the load stops.
//! 2. With PostgreSQL: `report_facts` filled with SQL for many conversations (1,000,000; 20,000
//!    with --quick), fourteen facts each over a year, and each report over the last 30 days
//!    timed over HTTP (p99 target 100 ms). With `--filled-database NAME` that database is kept
//!    and taken again by the next run, filled and counted only while empty; `--skip-pair` leaves
//!    out step 1.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, Executor, PgConnection};

use super::inbox::measure;
use super::{load, ms, open_conversations, Server};

/// Fills `report_facts` (definition 1, the bench token's tenant) for `conversations`
/// conversations with SQL: per conversation an opening, three messages each way, a first
/// response, two reply times, a requester wait and three resolution facts, over the last year.
/// Conversations open in the order of their numbers (give or take ten minutes), so their facts'
/// positions, and the rows' order on disk, follow time as the log's do: the projection writes
/// facts, and numbers conversations and contacts, in log order.
const FILL: &str = r#"
INSERT INTO report_facts (tenant_id, version, end_position, metric, kind, conversation_id, contact_id,
                          value, business_value, started_at, ended_at, start_position, agent_id,
                          assignee_id, team_id, inbox_id, channel, priority, labels, group_conversation,
                          bot, superseded_at)
SELECT 'default', 1, c.i * 100 + m.j, m.metric, m.kind,
       '00000000-0000-7000-9000-' || lpad(to_hex(c.i), 12, '0'),
       '00000000-0000-7000-8000-' || lpad(to_hex(c.i / 2), 12, '0'),
       CASE WHEN m.timed THEN (m.j * 97 * c.i) % 86400 END,
       CASE WHEN m.timed THEN (m.j * 97 * c.i) % 28800 END,
       c.opened_at, c.opened_at + m.j * interval '7 minutes', c.i * 100,
       'agent-' || (c.i + m.j) % 50, 'agent-' || c.i % 50, 'team-' || c.i % 8, 'inbox-' || c.i % 20,
       (ARRAY['whatsapp', 'email', 'chat', 'sms', 'instagram', 'phone'])[1 + c.i % 6],
       (ARRAY['low', 'medium', 'high', 'urgent'])[1 + c.i % 4],
       '["label-' || c.i % 30 || '"]', false, c.i % 5 = 0, NULL
  FROM (SELECT i, now() - interval '2 hours' - (1 - i::float8 / $3) * interval '365 days'
                - random() * interval '10 minutes' AS opened_at
          FROM generate_series($1::bigint, $2::bigint) AS i) AS c
 CROSS JOIN (VALUES (0, 'conversation_opened', NULL, false), (1, 'incoming_message', 'customer', false),
                    (2, 'outgoing_message', 'user', false), (3, 'first_response', NULL, true),
                    (4, 'reply_time', NULL, true), (5, 'incoming_message', 'customer', false),
                    (6, 'outgoing_message', 'user', false), (7, 'reply_time', NULL, true),
                    (8, 'incoming_message', 'customer', false), (9, 'outgoing_message', 'user', false),
                    (10, 'requester_wait', 'open', true), (11, 'resolution', NULL, true),
                    (12, 'first_resolution', NULL, true), (13, 'full_resolution', NULL, true))
       AS m(j, metric, kind, timed)
"#;

/// Fills the facts (see [`FILL`]), unless the store has some already (a kept database).
async fn fill(database_url: &str, conversations: u64) -> anyhow::Result<()> {
    let mut connection = PgConnection::connect(database_url).await?;
    let filled: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM report_facts LIMIT 1) AS f")
        .fetch_one(&mut connection)
        .await?;
    if filled > 0 {
        eprintln!("  the kept database has its facts already: not filled again");
        return Ok(());
    }
    let started = Instant::now();
    for first in (1..=conversations).step_by(50_000) {
        let last = (first + 49_999).min(conversations);
        sqlx::query(FILL)
            .bind(first as i64)
            .bind(last as i64)
            .bind(conversations as f64)
            .execute(&mut connection)
            .await
            .context("filling report_facts")?;
    }
    let filled = started.elapsed();
    connection.execute("VACUUM ANALYZE report_facts").await?;
    eprintln!(
        "  filled {} facts in {:.1} s, VACUUM ANALYZE {:.1} s",
        conversations * 14,
        filled.as_secs_f64(),
        (started.elapsed() - filled).as_secs_f64()
    );
    Ok(())
}

/// Waits until the facts' projection has applied the log's head (each request waits up to 5 s
/// for it).
async fn facts_caught_up(server: &Server, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let head = super::log_head(server).await;
    while started.elapsed() < timeout {
        // The newest version's facts: the one the server with facts runs (a tenant reads version
        // 1 until it makes another current, and that projection does not run here).
        let newest = colloquy_projections::reports::VERSIONS.last().map_or(1, |(version, _)| *version);
        let path = format!("/v1/reports/events?limit=1&version={newest}&min_position={head}");
        if server.get(&path).await == 200 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Three fresh stores' settings (each a data directory or a database): the pair's two, and the
/// filled one's.
pub(super) struct Stores {
    pub without: Vec<(String, String)>,
    pub with: Vec<(String, String)>,
    /// PostgreSQL only: the filled store's settings and its database's URL.
    pub filled: Option<(Vec<(String, String)>, String)>,
}

pub(super) async fn run(
    binary: &PathBuf,
    stores: Stores,
    quick: bool,
    clients: &[usize],
    seconds: u64,
    conversations: u64,
    skip_pair: bool,
) -> anyhow::Result<()> {
    if !skip_pair {
        pair(binary, stores.without, stores.with, quick, clients, seconds).await?;
    }
    let Some((filled_env, filled_url)) = stores.filled else { return Ok(()) };
    filled(binary, filled_env, &filled_url, quick, conversations).await
}

/// The command mix without and with the facts' projection, each on a fresh store.
async fn pair(
    binary: &PathBuf,
    mut without_env: Vec<(String, String)>,
    mut with_env: Vec<(String, String)>,
    quick: bool,
    clients: &[usize],
    seconds: u64,
) -> anyhow::Result<()> {
    let per_set = if quick { 50 } else { 500 };
    println!("## Reports: the command mix without and with the facts' projection ({seconds} s per row, a fresh store each)\n");
    without_env.push(("COLLOQUY_SKIP_PROJECTIONS".into(), "reports_v1,reports_v2".into()));
    let without = Arc::new(Server::start(binary, without_env).await?);
    let ids = Arc::new(open_conversations(&without, per_set).await);
    let mut before = Vec::new();
    for &c in clients {
        before.push(load(&without, &ids, c, seconds).await);
    }
    drop(without);
    // One definition's facts, as a deployment runs them once its tenants read the newest.
    with_env.push(("COLLOQUY_SKIP_PROJECTIONS".into(), "reports_v1".into()));
    let with = Arc::new(Server::start(binary, with_env).await?);
    let ids = Arc::new(open_conversations(&with, per_set).await);
    let mut after = Vec::new();
    for &c in clients {
        after.push(load(&with, &ids, c, seconds).await);
    }
    println!("| clients | commands/s without facts | commands/s with facts | ratio | p99 ms without | p99 ms with |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (b, a) in before.iter().zip(&after) {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {} | {} |",
            b.clients,
            b.per_second,
            a.per_second,
            a.per_second / b.per_second.max(1e-9),
            ms(b.p99),
            ms(a.p99)
        );
    }
    match facts_caught_up(&with, Duration::from_secs(600)).await {
        Some(took) => println!(
            "\nThe facts had caught up with the log {} ms after the load stopped.\n",
            took.as_millis()
        ),
        None => println!("\nThe facts had not caught up 600 s after the load stopped.\n"),
    }
    drop(with);
    Ok(())
}

/// Each report over the last 30 days of `conversations` conversations' filled facts.
async fn filled(
    binary: &PathBuf,
    filled_env: Vec<(String, String)>,
    filled_url: &str,
    quick: bool,
    conversations: u64,
) -> anyhow::Result<()> {
    println!(
        "## Reports over 30 days at {conversations} conversations ({} facts), PostgreSQL\n",
        conversations * 14
    );
    // The server first, so its migrations make the table; no events exist, so its projector
    // never touches the filled rows.
    let server = Server::start(binary, filled_env).await?;
    fill(filled_url, conversations).await?;
    let mut connection = PgConnection::connect(filled_url).await?;
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM report_cells LIMIT 1) AS c")
        .fetch_one(&mut connection)
        .await?;
    if counted == 0 {
        // The rollups the facts' projection would have kept beside them.
        let counting = Instant::now();
        let store = colloquy_infra::Store::open(&colloquy_infra::StoreLocation::Postgres {
            url: filled_url.to_owned(),
            max_connections: 4,
        })
        .await?;
        let tenant = colloquy_domain::TenantId::parse("default")?;
        let counted = colloquy_projections::reports::rollups::recount(&store, &tenant, 1).await?;
        eprintln!("  counted {counted} facts into the rollups in {:.1} s", counting.elapsed().as_secs_f64());
        drop(store);
        // Statistics, as for the facts: written in one go, the tables have none until autovacuum
        // comes by, and without them the planner looks numbers up through the wrong index.
        connection.execute("ANALYZE report_cells, report_numbers").await?;
    }
    // A report that folds every fact of its period takes seconds at a million conversations: a
    // few samples of it say enough. The ones read from the rollups get twenty.
    let (warmup, samples) = if quick { (3, 20) } else { (2, 20) };
    let folding = |path: &str| {
        let folds = path.contains("exact=true")
            || ["/first-response-distribution", "/inbox-labels"].iter().any(|p| path.contains(p));
        if folds && conversations >= 500_000 && !quick {
            (1, 5)
        } else {
            (warmup, samples)
        }
    };
    let since = (chrono::Utc::now() - chrono::Duration::days(30)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let period = format!("since={since}");
    println!("| report | samples | p50 ms | p99 ms | max ms | p99 < 100 ms |\n|---|---:|---:|---:|---:|---|");
    let mut cases = vec![
        ("summary (with the previous 30 days)".to_owned(), format!("/v1/reports/summary?{period}")),
        (
            "summary, exact=true (every fact folded, as before the rollups)".to_owned(),
            format!("/v1/reports/summary?exact=true&{period}"),
        ),
        (
            "timeseries first_response by day, Europe/Berlin".to_owned(),
            format!("/v1/reports/timeseries?metric=first_response&group_by=day&tz=Europe/Berlin&{period}"),
        ),
        (
            "first-response distribution".to_owned(),
            format!("/v1/reports/first-response-distribution?{period}"),
        ),
        ("inbox by label".to_owned(), format!("/v1/reports/inbox-labels?{period}")),
    ];
    for dimension in ["agent", "team", "inbox", "channel", "label", "priority"] {
        cases.push((format!("by {dimension}, every metric"), format!("/v1/reports/by/{dimension}?{period}")));
    }
    // Whole UTC days: read from the rollups' day cells alone, no facts at either end.
    let today = chrono::Utc::now().date_naive();
    let whole_days =
        format!("since={}T00:00:00Z&until={today}T00:00:00Z", today - chrono::Duration::days(30));
    cases.push(("summary, 30 whole UTC days".to_owned(), format!("/v1/reports/summary?{whole_days}")));
    // Whole hours: the days' cells and the tenant's hours' cells, no facts.
    let hour = chrono::Utc::now().format("%Y-%m-%dT%H:00:00Z").to_string();
    let hour_then =
        (chrono::Utc::now() - chrono::Duration::days(30)).format("%Y-%m-%dT%H:00:00Z").to_string();
    cases.push((
        "summary, 30 days from and to a whole hour".to_owned(),
        format!("/v1/reports/summary?since={hour_then}&until={hour}"),
    ));
    cases.push(("by agent, 30 whole UTC days".to_owned(), format!("/v1/reports/by/agent?{whole_days}")));
    cases.push((
        "by agent, 30 whole UTC days, exact=true (folded)".to_owned(),
        format!("/v1/reports/by/agent?exact=true&{whole_days}"),
    ));
    for (name, path) in cases {
        let (warmup, samples) = folding(&path);
        let (mut latencies, _) = measure(&server, warmup, samples, |_| path.clone()).await?;
        let p99 = latencies.percentile(0.99);
        println!(
            "| {name} | {samples} | {} | {} | {} | {} |",
            ms(latencies.percentile(0.5)),
            ms(p99),
            ms(latencies.percentile(1.0)),
            if p99 < Duration::from_millis(100) { "met" } else { "**missed**" }
        );
    }
    Ok(())
}
