//! The reports' queries: the facts, filtered and paged, and every fact of a period streamed
//! into a fold (what each report's figures are computed from, so they agree by construction).

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::Row;

use colloquy_domain::report::Metric;
use colloquy_domain::TenantId;
use colloquy_infra::{Store, StoreError};

use super::figures::Dimension;

/// One stored fact.
#[derive(Debug, Clone, PartialEq)]
pub struct FactRow {
    /// What it measures.
    pub metric: Metric,
    /// Its finer kind.
    pub kind: Option<String>,
    /// The conversation.
    pub conversation_id: String,
    /// Its contact.
    pub contact_id: String,
    /// Wall-clock seconds, for a duration.
    pub value: Option<i64>,
    /// Business seconds, for a duration.
    pub business_value: Option<i64>,
    /// When the span started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub ended_at: DateTime<Utc>,
    /// The position of the event that started it.
    pub start_position: i64,
    /// The position of the event that ended it.
    pub end_position: i64,
    /// The agent it is about.
    pub agent_id: Option<String>,
    /// The assignee then.
    pub assignee_id: Option<String>,
    /// The team then.
    pub team_id: Option<String>,
    /// The inbox.
    pub inbox_id: Option<String>,
    /// The channel.
    pub channel: String,
    /// The priority then.
    pub priority: String,
    /// The labels then.
    pub labels: Vec<String>,
    /// A group conversation.
    pub group: bool,
    /// A bot took part by then.
    pub bot: bool,
    /// The position of the fact that replaced it (a later full resolution), if any.
    pub superseded_at: Option<i64>,
}

/// Which facts: every field set narrows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Of these metrics (all when empty).
    pub metrics: Vec<Metric>,
    /// Of this kind.
    pub kind: Option<String>,
    /// Of one conversation.
    pub conversation_id: Option<String>,
    /// Of one contact.
    pub contact_id: Option<String>,
    /// Ended at or after.
    pub since: Option<DateTime<Utc>>,
    /// Ended before.
    pub until: Option<DateTime<Utc>>,
    /// About this agent.
    pub agent_id: Option<String>,
    /// With this team then.
    pub team_id: Option<String>,
    /// In this inbox.
    pub inbox_id: Option<String>,
    /// On this channel.
    pub channel: Option<String>,
    /// With this priority then.
    pub priority: Option<String>,
    /// With this label then.
    pub label: Option<String>,
    /// Leave out facts a later one replaced (what figures count).
    pub current_only: bool,
    /// Recorded up to this log position (what the log said then).
    pub at_position: Option<i64>,
}

enum Bind {
    Text(String),
    Int(i64),
    Time(DateTime<Utc>),
}

/// `query` with its tenant, version and `binds` bound in order (a macro: each store's query is a
/// type of its own).
macro_rules! bound {
    ($query:expr, $tenant:expr, $version:expr, $binds:expr) => {{
        let mut query = $query.bind($tenant.as_str()).bind(i64::from($version));
        for bind in $binds {
            query = match bind {
                Bind::Text(text) => query.bind(text),
                Bind::Int(int) => query.bind(*int),
                Bind::Time(time) => query.bind(*time),
            };
        }
        query
    }};
}

/// `filter`'s conditions, after `tenant_id = $1 AND version = $2`, with their bindings.
fn conditions(filter: &Filter, binds: &mut Vec<Bind>) -> String {
    let mut sql = String::from("tenant_id = $1 AND version = $2");
    let mut push = |sql: &mut String, condition: &str, bind: Bind| {
        binds.push(bind);
        sql.push_str(&condition.replace('?', &format!("${}", binds.len() + 2)));
    };
    if !filter.metrics.is_empty() {
        sql.push_str(" AND metric IN (");
        for (index, metric) in filter.metrics.iter().enumerate() {
            push(&mut sql, if index == 0 { "?" } else { ", ?" }, Bind::Text(metric.as_str().into()));
        }
        sql.push(')');
    }
    let texts = [
        (" AND kind = ?", &filter.kind),
        (" AND conversation_id = ?", &filter.conversation_id),
        (" AND contact_id = ?", &filter.contact_id),
        (" AND agent_id = ?", &filter.agent_id),
        (" AND team_id = ?", &filter.team_id),
        (" AND inbox_id = ?", &filter.inbox_id),
        (" AND channel = ?", &filter.channel),
        (" AND priority = ?", &filter.priority),
    ];
    for (condition, value) in texts {
        if let Some(value) = value {
            push(&mut sql, condition, Bind::Text(value.clone()));
        }
    }
    if let Some(label) = &filter.label {
        // Labels are stored as a JSON array of strings: match the label's own JSON, escaped for LIKE.
        let json = serde_json::to_string(label).unwrap_or_default();
        let escaped = json.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        push(&mut sql, " AND labels LIKE ? ESCAPE '\\'", Bind::Text(format!("%{escaped}%")));
    }
    if let Some(since) = filter.since {
        push(&mut sql, " AND ended_at >= ?", Bind::Time(since));
    }
    if let Some(until) = filter.until {
        push(&mut sql, " AND ended_at < ?", Bind::Time(until));
    }
    if let Some(position) = filter.at_position {
        push(&mut sql, " AND end_position <= ?", Bind::Int(position));
        if filter.current_only {
            push(&mut sql, " AND (superseded_at IS NULL OR superseded_at > ?)", Bind::Int(position));
        }
    } else if filter.current_only {
        sql.push_str(" AND superseded_at IS NULL");
    }
    sql
}

pub(crate) const COLUMNS: &str =
    "metric, kind, conversation_id, contact_id, value, business_value, started_at, ended_at,
    start_position, end_position, agent_id, assignee_id, team_id, inbox_id, channel, priority, labels,
    group_conversation, bot, superseded_at";

pub(crate) fn fact_row<R: Row>(row: &R) -> Result<FactRow, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
    let metric: String = row.try_get(0)?;
    let labels: String = row.try_get(16)?;
    Ok(FactRow {
        metric: Metric::parse(&metric)
            .ok_or_else(|| sqlx::Error::Decode(format!("metric {metric}").into()))?,
        kind: row.try_get(1)?,
        conversation_id: row.try_get(2)?,
        contact_id: row.try_get(3)?,
        value: row.try_get(4)?,
        business_value: row.try_get(5)?,
        started_at: row.try_get(6)?,
        ended_at: row.try_get(7)?,
        start_position: row.try_get(8)?,
        end_position: row.try_get(9)?,
        agent_id: row.try_get(10)?,
        assignee_id: row.try_get(11)?,
        team_id: row.try_get(12)?,
        inbox_id: row.try_get(13)?,
        channel: row.try_get(14)?,
        priority: row.try_get(15)?,
        labels: serde_json::from_str(&labels).map_err(decode)?,
        group: row.try_get(17)?,
        bot: row.try_get(18)?,
        superseded_at: row.try_get(19)?,
    })
}

/// Where a page of facts continues: after this end position and metric.
pub type Cursor = (i64, String);

/// Up to `limit` facts of `tenant`'s definition `version` that `filter` selects, in log order
/// (by end position, then metric), after `after`.
pub async fn facts(
    store: &Store,
    tenant: &TenantId,
    version: u32,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<FactRow>, StoreError> {
    let mut binds = Vec::new();
    let mut sql = format!("SELECT {COLUMNS} FROM report_facts WHERE {}", conditions(filter, &mut binds));
    if let Some((position, metric)) = after {
        let next = binds.len() + 3;
        sql.push_str(&format!(
            " AND (end_position > ${next} OR (end_position = ${next} AND metric > ${}))",
            next + 1
        ));
        binds.push(Bind::Int(*position));
        binds.push(Bind::Text(metric.clone()));
    }
    sql.push_str(&format!(" ORDER BY end_position, metric LIMIT ${}", binds.len() + 3));
    binds.push(Bind::Int(limit));
    let rows = colloquy_infra::on_pool!(store, |pool| {
        let query = bound!(sqlx::query(&sql), tenant, version, &binds);
        let rows = query.fetch_all(pool).await?;
        rows.iter().map(fact_row).collect::<Result<Vec<_>, _>>()?
    });
    Ok(rows)
}

/// Sends every fact `filter` selects to `sink`, in no particular order, as fast as it takes them
/// (so memory stays flat): what a report folds its figures from, and a CSV export streams. Stops
/// early, without an error, when the receiver is gone.
pub async fn each(
    store: &Store,
    tenant: &TenantId,
    version: u32,
    filter: &Filter,
    sink: tokio::sync::mpsc::Sender<FactRow>,
) -> Result<(), StoreError> {
    stream(store, tenant, version, filter, "", sink).await
}

/// As [`each`], in log order (by end position): the order the projection met them in.
pub async fn each_in_log_order(
    store: &Store,
    tenant: &TenantId,
    version: u32,
    filter: &Filter,
    sink: tokio::sync::mpsc::Sender<FactRow>,
) -> Result<(), StoreError> {
    stream(store, tenant, version, filter, " ORDER BY end_position, metric", sink).await
}

async fn stream(
    store: &Store,
    tenant: &TenantId,
    version: u32,
    filter: &Filter,
    order: &str,
    sink: tokio::sync::mpsc::Sender<FactRow>,
) -> Result<(), StoreError> {
    let mut binds = Vec::new();
    let sql = format!("SELECT {COLUMNS} FROM report_facts WHERE {}{order}", conditions(filter, &mut binds));
    colloquy_infra::on_pool!(store, |pool| {
        let query = bound!(sqlx::query(&sql), tenant, version, &binds);
        let mut rows = query.fetch(pool);
        while let Some(row) = rows.try_next().await? {
            if sink.send(fact_row(&row)?).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// What a rollup's end folds of a fact: its metric, conversation, contact and durations, and the
/// keys it counts under in one dimension (one `None` for the whole tenant).
#[derive(Debug, Clone, PartialEq)]
pub struct Tallied {
    /// What it measures.
    pub metric: Metric,
    /// The conversation.
    pub conversation_id: String,
    /// Its contact.
    pub contact_id: String,
    /// Wall-clock seconds, for a duration.
    pub value: Option<i64>,
    /// Business seconds, for a duration.
    pub business_value: Option<i64>,
    /// The keys it counts under ([`Dimension::keys`]).
    pub keys: Vec<Option<String>>,
}

/// Every fact `filter` selects, as much of it as a fold per key of `dimension` needs: six columns
/// where a whole fact has twenty (the end of a breakdown's period reads thousands).
pub async fn tallied(
    store: &Store,
    tenant: &TenantId,
    version: u32,
    filter: &Filter,
    dimension: Option<Dimension>,
) -> Result<Vec<Tallied>, StoreError> {
    let column = match dimension {
        None => "NULL",
        Some(Dimension::Agent) => "agent_id",
        Some(Dimension::Team) => "team_id",
        Some(Dimension::Inbox) => "inbox_id",
        Some(Dimension::Channel) => "channel",
        Some(Dimension::Priority) => "priority",
        Some(Dimension::Label) => "labels",
    };
    let mut binds = Vec::new();
    let sql = format!(
        "SELECT metric, conversation_id, contact_id, value, business_value, {column} FROM report_facts WHERE {}",
        conditions(filter, &mut binds)
    );
    let tallied = colloquy_infra::on_pool!(store, |pool| {
        let query = bound!(sqlx::query(&sql), tenant, version, &binds);
        let mut rows = query.fetch(pool);
        let mut tallied = Vec::new();
        while let Some(row) = rows.try_next().await? {
            let metric: String = row.try_get(0)?;
            let key: Option<String> = row.try_get(5)?;
            let keys = match (dimension, key) {
                (Some(Dimension::Label), Some(labels)) => {
                    let labels: Vec<String> =
                        serde_json::from_str(&labels).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                    if labels.is_empty() {
                        vec![None]
                    } else {
                        labels.into_iter().map(Some).collect()
                    }
                }
                (_, key) => vec![key],
            };
            tallied.push(Tallied {
                metric: Metric::parse(&metric)
                    .ok_or_else(|| sqlx::Error::Decode(format!("metric {metric}").into()))?,
                conversation_id: row.try_get(1)?,
                contact_id: row.try_get(2)?,
                value: row.try_get(3)?,
                business_value: row.try_get(4)?,
                keys,
            });
        }
        tallied
    });
    Ok(tallied)
}
