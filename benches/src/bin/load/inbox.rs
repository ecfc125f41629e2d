//! The inbox benchmark (`load --inbox`): fills the `conversation_list` read model of a fresh
//! PostgreSQL database with N conversations by one INSERT ... SELECT, then measures the list and
//! counts endpoints over HTTP (first pages of each filter and sort, deep cursor pages, counts)
//! and prints the EXPLAIN (ANALYZE, BUFFERS) plans of the statements behind them.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection, Row};

use colloquy_domain::conversation::{Priority, Status};
use colloquy_domain::Channel;
use colloquy_projections::conversation_list::{
    explainable, Direction, LabelMatch, ListFilter, Sort, SortKey,
};

use super::{ms, Latencies, Server};

/// The tenant the bootstrap token belongs to.
const TENANT: &str = "default";
/// Assignees, inboxes, labels, teams: the spread the issue asks for.
const ASSIGNEES: usize = 100;
const INBOXES: usize = 20;
const LABELS: usize = 50;

/// Fills the read model with `rows` conversations of one tenant. Every value comes from SQL
/// `random()`, evaluated once per row in the inner query (a volatile target list keeps
/// PostgreSQL from flattening it), and each column is encoded as `bind_row!` in
/// projections/src/conversation_list/store.rs writes it.
const FILL: &str = r#"
INSERT INTO conversation_list (conversation_id, tenant_id, number, contact_id, contact_name, contact_email,
    contact_phone, channel, inbox_id, group_type, subject, status, snoozed_until, priority, priority_rank,
    assignee_id, team_id, labels, starred, deleted, custom_fields, message_count, customer_message_count,
    last_message_preview, last_message_at, last_message_type, last_message_sender_kind, last_responder,
    last_customer_message_at, last_agent_message_at, waiting_since, first_reply_at, response_count,
    total_response_time_ms, participants, mentioned, readers, created_at, updated_at, last_activity_at, version)
SELECT md5('conversation-' || i)::uuid::text, $2, i, md5('contact-' || c)::uuid::text,
       first_name || ' ' || last_name, lower(first_name) || '.' || lower(last_name) || c || '@example.com',
       '+1555' || lpad(c::text, 7, '0'),
       (ARRAY['whatsapp', 'instagram', 'email', 'sms', 'chat', 'phone'])[1 + channel],
       'inbox-' || inbox, CASE WHEN r_group < 0.05 THEN 'group' ELSE 'individual' END,
       'Order question #' || i, status,
       CASE WHEN status = 'snoozed' THEN last_activity_at + interval '1 day' END,
       (ARRAY['low', 'medium', 'high', 'urgent'])[rank], rank,
       CASE WHEN r_unassigned < 0.1 THEN NULL ELSE 'agent-' || assignee END, 'team-' || team,
       (SELECT '[' || string_agg('"label-' || l || '"', ',' ORDER BY ('label-' || l) COLLATE "C") || ']'
          FROM unnest((ARRAY[l1, (l1 + 1 + l2) % 50, (l1 + 2 + l2 + l3) % 50])[1:label_count]) AS l),
       r_starred < 0.05, r_deleted < 0.02, '{}', messages, (messages + 1) / 2,
       'Where is my order ' || i || '?', last_activity_at, 'text',
       CASE WHEN waiting THEN 'customer' ELSE 'user' END, CASE WHEN waiting THEN 'customer' ELSE 'agent' END,
       last_activity_at, CASE WHEN waiting THEN NULL ELSE last_activity_at END,
       CASE WHEN waiting THEN greatest(created_at, last_activity_at - r_wait * interval '3 hours') END,
       created_at + interval '5 minutes', 1, 300000,
       coalesce((SELECT '[' || string_agg('"agent-' || p || '"', ',' ORDER BY ('agent-' || p) COLLATE "C") || ']'
          FROM unnest((ARRAY[p1, (p1 + 1 + p2) % 100, (p1 + 2 + p2 + p3) % 100])[1:participant_count]) AS p),
          '[]'),
       CASE WHEN r_mentioned < 0.2 THEN '["agent-' || mention || '"]' ELSE '[]' END,
       '{}', created_at, last_activity_at, last_activity_at, messages + 1
FROM (SELECT *, created_at + activity * (now() - created_at) AS last_activity_at,
             CASE WHEN r_status < 0.40 THEN 'open' WHEN r_status < 0.55 THEN 'pending'
                  WHEN r_status < 0.60 THEN 'snoozed' ELSE 'closed' END AS status,
             CASE WHEN r_priority < 0.2 THEN 1 WHEN r_priority < 0.7 THEN 2
                  WHEN r_priority < 0.9 THEN 3 ELSE 4 END AS rank,
             r_waiting < 0.5 AS waiting
      FROM (SELECT i, floor(random() * greatest($1::bigint / 5, 1))::bigint AS c,
                   (ARRAY['Olivia', 'Liam', 'Emma', 'Noah', 'Ava', 'Mateo', 'Sofia', 'Lucas', 'Mia', 'Amir',
                          'Yuki', 'Ines', 'Omar', 'Lena', 'Ravi', 'Chloe', 'Diego', 'Hana', 'Kofi', 'Zoe'])
                       [1 + floor(random() * 20)::int] AS first_name,
                   (ARRAY['Smith', 'Garcia', 'Chen', 'Okafor', 'Muller', 'Rossi', 'Tanaka', 'Silva', 'Novak',
                          'Haddad', 'Kowalski', 'Jensen', 'Dubois', 'Patel', 'Moreau', 'Ivanova', 'Santos',
                          'Kim', 'Nguyen', 'Brown', 'Larsen', 'Costa', 'Weber', 'Ali', 'Fischer'])
                       [1 + floor(random() * 25)::int] AS last_name,
                   floor(random() * 6)::int AS channel, floor(random() * 20)::int AS inbox,
                   floor(random() * 100)::int AS assignee, floor(random() * 10)::int AS team,
                   1 + floor(random() * 3)::int AS label_count, floor(random() * 50)::int AS l1,
                   floor(random() * 16)::int AS l2, floor(random() * 16)::int AS l3,
                   floor(random() * 4)::int AS participant_count, floor(random() * 100)::int AS p1,
                   floor(random() * 40)::int AS p2, floor(random() * 40)::int AS p3,
                   floor(random() * 100)::int AS mention, 1 + floor(random() * 40)::bigint AS messages,
                   now() - random() * interval '365 days' AS created_at, random() AS activity,
                   random() AS r_status, random() AS r_priority, random() AS r_unassigned,
                   random() AS r_group, random() AS r_starred, random() AS r_deleted,
                   random() AS r_waiting, random() AS r_wait, random() AS r_mentioned
            FROM generate_series(1, $1::bigint) AS i) AS g) AS h
"#;

/// Fills the read model and its counters, then VACUUM ANALYZE so plans see the real spread.
async fn fill(database_url: &str, rows: u64) -> anyhow::Result<()> {
    let mut connection = PgConnection::connect(database_url).await?;
    let started = Instant::now();
    // Building the migrations' indexes once after the insert is several times faster than
    // maintaining them row by row; they are read back from the catalog, so they stay the
    // migrations' own.
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = 'conversation_list'
         AND indexname <> 'conversation_list_pkey'",
    )
    .fetch_all(&mut connection)
    .await?;
    for (name, _) in &indexes {
        connection.execute(format!("DROP INDEX {name}").as_str()).await?;
    }
    sqlx::query(FILL).bind(rows as i64).bind(TENANT).execute(&mut connection).await.context("filling")?;
    sqlx::query(
        "INSERT INTO conversation_counts (tenant_id, status, assignee_id, count)
         SELECT tenant_id, status, coalesce(assignee_id, ''), count(*) FROM conversation_list
         WHERE NOT deleted GROUP BY 1, 2, 3",
    )
    .execute(&mut connection)
    .await?;
    connection.execute("SET maintenance_work_mem = '256MB'").await?;
    for (_, definition) in &indexes {
        connection.execute(definition.as_str()).await?;
    }
    let filled = started.elapsed();
    connection.execute("VACUUM ANALYZE conversation_list").await?;
    connection.execute("VACUUM ANALYZE conversation_counts").await?;
    eprintln!(
        "  filled {rows} rows and built {} indexes in {:.1} s, VACUUM ANALYZE {:.1} s",
        indexes.len(),
        filled.as_secs_f64(),
        (started.elapsed() - filled).as_secs_f64()
    );
    Ok(())
}

/// One measured list: its name, its sort, and the filter of its k-th request (so assignees,
/// labels and so on vary across requests).
struct Case {
    name: &'static str,
    sort: Sort,
    filter: Box<dyn Fn(usize) -> ListFilter>,
}

fn case(name: &'static str, sort: Sort, filter: impl Fn(usize) -> ListFilter + 'static) -> Case {
    Case { name, sort, filter: Box::new(filter) }
}

fn sort(key: SortKey, direction: Direction) -> Sort {
    Sort { key, direction }
}

fn agent(k: usize) -> String {
    format!("agent-{}", k % ASSIGNEES)
}

fn label(k: usize) -> String {
    format!("label-{}", k % LABELS)
}

fn day(days_ago: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(days_ago)
}

fn cases(contacts: &[String], names: &[String]) -> Vec<Case> {
    let by_activity = Sort::default();
    let open = || ListFilter { statuses: vec![Status::Open], ..ListFilter::default() };
    let contacts = contacts.to_vec();
    let names = names.to_vec();
    let mut cases = vec![
        case("no filter", by_activity, |_| ListFilter::default()),
        case("status=open", by_activity, move |_| open()),
        case("status=pending,snoozed", by_activity, |_| ListFilter {
            statuses: vec![Status::Pending, Status::Snoozed],
            ..ListFilter::default()
        }),
        case("priority=urgent", by_activity, |_| ListFilter {
            priorities: vec![Priority::Urgent],
            ..ListFilter::default()
        }),
        case("assignee_id=X", by_activity, |k| ListFilter {
            assignee_id: Some(agent(k)),
            ..ListFilter::default()
        }),
        case("unassigned=true", by_activity, |_| ListFilter { unassigned: true, ..ListFilter::default() }),
        case("team_id=X", by_activity, |k| ListFilter {
            team_id: Some(format!("team-{}", k % 10)),
            ..ListFilter::default()
        }),
        case("inbox_id=X", by_activity, |k| ListFilter {
            inbox_id: Some(format!("inbox-{}", k % INBOXES)),
            ..ListFilter::default()
        }),
        case("contact_id=X", by_activity, move |k| ListFilter {
            contact_id: contacts.get(k % contacts.len().max(1)).cloned(),
            ..ListFilter::default()
        }),
        case("channel=X", by_activity, |k| ListFilter {
            channels: vec![[Channel::Whatsapp, Channel::Email, Channel::Sms][k % 3]],
            ..ListFilter::default()
        }),
        case("label=Y", by_activity, |k| ListFilter { labels: vec![label(k)], ..ListFilter::default() }),
        case("label=Y,Z&label_match=any", by_activity, |k| ListFilter {
            labels: vec![label(k), label(k + 7)],
            label_match: LabelMatch::Any,
            ..ListFilter::default()
        }),
        case("starred=true", by_activity, |_| ListFilter { starred: Some(true), ..ListFilter::default() }),
        case("awaiting_response=true", by_activity, |_| ListFilter {
            awaiting_response: Some(true),
            ..ListFilter::default()
        }),
        case("participating=X", by_activity, |k| ListFilter {
            participating: Some(agent(k)),
            ..ListFilter::default()
        }),
        case("mentioned=X", by_activity, |k| ListFilter {
            mentioned: Some(agent(k)),
            ..ListFilter::default()
        }),
        case("created in a 30-day range", by_activity, |k| ListFilter {
            created_after: Some(day(60 + (k % 200) as i64)),
            created_before: Some(day(30 + (k % 200) as i64)),
            ..ListFilter::default()
        }),
        case("created in a 30-day range, sort=created_at", sort(SortKey::CreatedAt, Direction::Desc), |k| {
            ListFilter {
                created_after: Some(day(60 + (k % 200) as i64)),
                created_before: Some(day(30 + (k % 200) as i64)),
                ..ListFilter::default()
            }
        }),
        case("q=<contact name>", by_activity, move |k| ListFilter {
            q: names.get(k % names.len().max(1)).cloned(),
            ..ListFilter::default()
        }),
        case("status=open&assignee_id=X&label=Y", by_activity, move |k| ListFilter {
            assignee_id: Some(agent(k)),
            labels: vec![label(k * 7 + 3)],
            ..open()
        }),
    ];
    let keys = [
        SortKey::LastActivityAt,
        SortKey::CreatedAt,
        SortKey::Priority,
        SortKey::WaitingSince,
        SortKey::SlaDueAt,
    ];
    for key in keys {
        for direction in [Direction::Desc, Direction::Asc] {
            let name = match (key, direction) {
                (SortKey::LastActivityAt, Direction::Desc) => continue,
                (SortKey::LastActivityAt, Direction::Asc) => "sort=last_activity_at&order=asc",
                (SortKey::CreatedAt, Direction::Desc) => "sort=created_at&order=desc",
                (SortKey::CreatedAt, Direction::Asc) => "sort=created_at&order=asc",
                (SortKey::Priority, Direction::Desc) => "sort=priority&order=desc",
                (SortKey::Priority, Direction::Asc) => "sort=priority&order=asc",
                (SortKey::WaitingSince, Direction::Desc) => "sort=waiting_since&order=desc",
                (SortKey::WaitingSince, Direction::Asc) => "sort=waiting_since&order=asc",
                (SortKey::SlaDueAt, Direction::Desc) => "sort=sla_due_at&order=desc",
                (SortKey::SlaDueAt, Direction::Asc) => "sort=sla_due_at&order=asc",
            };
            cases.push(case(name, sort(key, direction), |_| ListFilter::default()));
        }
    }
    cases.push(case("status=open&sort=priority", sort(SortKey::Priority, Direction::Desc), move |_| open()));
    cases.push(case(
        "status=open&sort=waiting_since",
        sort(SortKey::WaitingSince, Direction::Asc),
        move |_| open(),
    ));
    cases
}

fn encode(value: &str) -> String {
    value.replace('%', "%25").replace(' ', "%20").replace('+', "%2B").replace('&', "%26")
}

fn time(value: DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn priority_name(priority: &Priority) -> &'static str {
    match priority {
        Priority::Low => "low",
        Priority::Medium => "medium",
        Priority::High => "high",
        Priority::Urgent => "urgent",
    }
}

/// The statuses, priorities and channels of a filter, by their query names.
fn named_lists(filter: &ListFilter) -> [Vec<&'static str>; 3] {
    [
        filter.statuses.iter().map(|s| s.as_str()).collect(),
        filter.priorities.iter().map(priority_name).collect(),
        filter.channels.iter().map(|c| c.as_str()).collect(),
    ]
}

/// The query string of `GET /v1/conversations` for a filter and sort.
fn query_string(filter: &ListFilter, sort: Sort) -> String {
    let mut parts = Vec::new();
    for (name, values) in ["status", "priority", "channel"].into_iter().zip(named_lists(filter)) {
        if !values.is_empty() {
            parts.push(format!("{name}={}", values.join(",")));
        }
    }
    for (name, value) in [
        ("assignee_id", &filter.assignee_id),
        ("team_id", &filter.team_id),
        ("inbox_id", &filter.inbox_id),
        ("contact_id", &filter.contact_id),
        ("participating", &filter.participating),
        ("mentioned", &filter.mentioned),
        ("q", &filter.q),
    ] {
        if let Some(value) = value {
            parts.push(format!("{name}={}", encode(value)));
        }
    }
    if filter.unassigned {
        parts.push("unassigned=true".into());
    }
    if !filter.labels.is_empty() {
        parts.push(format!("label={}", filter.labels.join(",")));
        if filter.label_match == LabelMatch::Any {
            parts.push("label_match=any".into());
        }
    }
    for (name, value) in [("starred", filter.starred), ("awaiting_response", filter.awaiting_response)] {
        if let Some(value) = value {
            parts.push(format!("{name}={value}"));
        }
    }
    for (name, value) in [
        ("created_after", filter.created_after),
        ("created_before", filter.created_before),
        ("last_activity_after", filter.last_activity_after),
        ("last_activity_before", filter.last_activity_before),
    ] {
        if let Some(value) = value {
            parts.push(format!("{name}={}", time(value)));
        }
    }
    parts.push(format!("sort={}&order={}", sort.key.as_str(), sort.direction.as_str()));
    parts.join("&")
}

/// A value bound to an EXPLAINed statement.
enum Bind {
    Text(String),
    Time(DateTime<Utc>),
}

/// The values `explainable`'s statement takes, in the order its conditions number them
/// (projections/src/conversation_list/query.rs `conditions`).
fn binds(filter: &ListFilter) -> Vec<Bind> {
    let mut binds = vec![Bind::Text(TENANT.into())];
    let json = |v: &String| Bind::Text(serde_json::to_string(v).unwrap_or_default());
    for values in named_lists(filter) {
        binds.extend(values.into_iter().map(|v| Bind::Text(v.to_owned())));
    }
    // The cases here never filter by group type, which would come next.
    for value in
        [&filter.assignee_id, &filter.team_id, &filter.inbox_id, &filter.contact_id].into_iter().flatten()
    {
        binds.push(Bind::Text(value.clone()));
    }
    binds.extend(filter.labels.iter().map(json));
    binds.extend(filter.participating.iter().map(json));
    binds.extend(filter.mentioned.iter().map(json));
    for value in
        [filter.created_after, filter.created_before, filter.last_activity_after, filter.last_activity_before]
            .into_iter()
            .flatten()
    {
        binds.push(Bind::Time(value));
    }
    if let Some(q) = &filter.q {
        binds.push(Bind::Text(format!("%{}%", q.to_lowercase())));
    }
    binds
}

/// EXPLAIN (ANALYZE, BUFFERS) of `sql` with `binds`, as text.
async fn explain(connection: &mut PgConnection, sql: &str, binds: Vec<Bind>) -> anyhow::Result<String> {
    let explain = format!("EXPLAIN (ANALYZE, BUFFERS) {sql}");
    let mut query = sqlx::query(&explain).persistent(false);
    for bind in binds {
        query = match bind {
            Bind::Text(v) => query.bind(v),
            Bind::Time(v) => query.bind(v),
        };
    }
    let rows = query.fetch_all(connection).await?;
    let lines: Vec<String> = rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?;
    Ok(lines.join("\n"))
}

async fn get_json(server: &Server, path: &str) -> (u16, Value) {
    match server.client.get(format!("{}{path}", server.base)).bearer_auth(&server.token).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Times `samples` requests after `warmup` untimed ones; the k-th request goes to `path(k)`.
pub(super) async fn measure(
    server: &Server,
    warmup: usize,
    samples: usize,
    path: impl Fn(usize) -> String,
) -> anyhow::Result<(Latencies, usize)> {
    let mut latencies = Vec::with_capacity(samples);
    let mut rows = 0;
    for k in 0..warmup + samples {
        let path = path(k);
        let started = Instant::now();
        let (status, body) = get_json(server, &path).await;
        let elapsed = started.elapsed();
        if status != 200 {
            bail!("GET {path} answered {status}: {body}");
        }
        if k >= warmup {
            latencies.push(elapsed);
        }
        if k == warmup {
            rows = body["data"].as_array().map_or(0, Vec::len);
        }
    }
    Ok((Latencies(latencies), rows))
}

/// Walks `pages` pages of `query` and returns each page's latency, in order.
async fn walk(server: &Server, query: &str, pages: usize) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(pages);
    let mut cursor: Option<String> = None;
    for _ in 0..pages {
        let path = match &cursor {
            None => format!("/v1/conversations?{query}"),
            Some(c) => format!("/v1/conversations?{query}&cursor={c}"),
        };
        let started = Instant::now();
        let (status, body) = get_json(server, &path).await;
        latencies.push(started.elapsed());
        if status != 200 {
            bail!("GET {path} answered {status}: {body}");
        }
        cursor = body["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    Ok(latencies)
}

fn row(name: &str, latencies: &mut Latencies, rows: &str, target: Duration) -> String {
    let p99 = latencies.percentile(0.99);
    format!(
        "| {name} | {} | {} | {} | {rows} | {} |",
        ms(latencies.percentile(0.5)),
        ms(p99),
        ms(latencies.percentile(1.0)),
        if p99 < target { "met" } else { "**missed**" }
    )
}

/// The inbox benchmark on `database_url` (an empty database the server already migrated).
pub async fn run(server: &Server, database_url: &str, rows: u64, quick: bool) -> anyhow::Result<()> {
    let (warmup, samples, pages) = if quick { (5, 30, 40) } else { (20, 200, 1_000) };
    println!(
        "# Colloquy inbox benchmark: {rows} conversations in PostgreSQL{}\n",
        if quick { " (quick mode)" } else { "" }
    );
    fill(database_url, rows).await?;
    let mut connection = PgConnection::connect(database_url).await?;
    let contacts: Vec<String> = sqlx::query_scalar(
        "SELECT contact_id FROM conversation_list WHERE NOT deleted ORDER BY number LIMIT 500",
    )
    .fetch_all(&mut connection)
    .await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT contact_name FROM conversation_list WHERE number <= 2000 ORDER BY 1 LIMIT 200",
    )
    .fetch_all(&mut connection)
    .await?;
    let (status, first) = get_json(server, "/v1/conversations?limit=1").await;
    if status != 200 || first["data"].as_array().is_none_or(Vec::is_empty) {
        bail!("the filled rows are not visible to the bootstrap token's tenant ({status}: {first})");
    }

    let list_target = Duration::from_millis(10);
    let counts_target = Duration::from_millis(5);
    println!(
        "## First pages over HTTP (limit 25; {samples} sequential requests after {warmup} warm-up, keep-alive)\n"
    );
    println!(
        "| query | p50 ms | p99 ms | max ms | rows on page | p99 < 10 ms |\n|---|---:|---:|---:|---:|---|"
    );
    let cases = cases(&contacts, &names);
    for case in &cases {
        let (mut latencies, page_rows) = measure(server, warmup, samples, |k| {
            format!("/v1/conversations?{}", query_string(&(case.filter)(k), case.sort))
        })
        .await?;
        println!("{}", row(case.name, &mut latencies, &page_rows.to_string(), list_target));
    }
    let (mut latencies, _) = measure(server, warmup, samples, |k| {
        format!("/v1/conversations/counts?status=open&user_id={}", agent(k))
    })
    .await?;
    println!("{}", row("counts?status=open&user_id=X", &mut latencies, "-", counts_target));

    println!("\n## Cursor walks ({pages} pages of 25; first 100 pages against the last 100)\n");
    println!(
        "| walk | pages 1-100 p50 ms | p99 ms | last 100 pages p50 ms | p99 ms | max ms | p99 < 10 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (name, query) in [
        ("no filter, last activity", "limit=25".to_owned()),
        ("status=open, last activity", "status=open&limit=25".to_owned()),
        (
            "assignee_id=agent-7, created_at asc",
            "assignee_id=agent-7&sort=created_at&order=asc&limit=25".to_owned(),
        ),
    ] {
        let latencies = walk(server, &query, pages).await?;
        let split = latencies.len().saturating_sub(100).max(latencies.len() / 2);
        let mut first = Latencies(latencies[..latencies.len().min(100).min(split.max(1))].to_vec());
        let mut last = Latencies(latencies[split..].to_vec());
        let last_p99 = last.percentile(0.99);
        println!(
            "| {name} ({} pages) | {} | {} | {} | {} | {} | {} |",
            latencies.len(),
            ms(first.percentile(0.5)),
            ms(first.percentile(0.99)),
            ms(last.percentile(0.5)),
            ms(last_p99),
            ms(last.percentile(1.0)),
            if last_p99 < list_target { "met" } else { "**missed**" }
        );
    }

    println!("\n## Plans (EXPLAIN (ANALYZE, BUFFERS), first-page statements as `list` runs them)\n");
    for case in &cases {
        let filter = (case.filter)(1);
        let (sql, count) = explainable(&filter, case.sort, true);
        let binds = binds(&filter);
        if binds.len() != count {
            bail!("{}: {} values for {count} parameters", case.name, binds.len());
        }
        let plan = explain(&mut connection, &sql, binds).await?;
        // The column list is long and the same in every statement.
        let shown =
            sql.split_once(" FROM ").map_or(sql.clone(), |(_, rest)| format!("SELECT ... FROM {rest}"));
        println!("### {}\n\n```sql\n{shown}\n```\n\n```\n{plan}\n```\n", case.name);
    }
    let counts_sql =
        "SELECT status, assignee_id, count FROM conversation_counts WHERE tenant_id = $1 AND count <> 0";
    let plan = explain(&mut connection, counts_sql, vec![Bind::Text(TENANT.into())]).await?;
    println!("### counts\n\n```sql\n{counts_sql}\n```\n\n```\n{plan}\n```");
    Ok(())
}
