//! The reports' writes: conversations' states, facts and calendars, in a batch's transaction.

use std::collections::{BTreeMap, HashMap, HashSet};

use colloquy_domain::calendar::{Calendar, CalendarVersion};
use colloquy_domain::definition::DefinitionEvent;
use colloquy_domain::report::{Fact, Metric, ReportConversation};

use super::query::{self, FactRow};
use super::rollups;
use crate::on_tx;
use crate::rows::{numbered, parameter_rows, statement_rows};
use crate::runtime::{ProjectionError, Tx};

fn codec(error: serde_json::Error) -> ProjectionError {
    ProjectionError::from(sqlx::Error::Decode(Box::new(error)))
}

/// Removes definition `version`'s rows (a rebuild's start).
pub(super) async fn clear(tx: &mut Tx<'_>, version: u32) -> Result<(), ProjectionError> {
    for table in [
        super::FACTS_TABLE,
        super::CONVERSATIONS_TABLE,
        super::CALENDARS_TABLE,
        rollups::CELLS_TABLE,
        rollups::NUMBERS_TABLE,
        rollups::HEADS_TABLE,
    ] {
        let sql = format!("DELETE FROM {table} WHERE version = $1");
        on_tx!(tx, |conn| {
            sqlx::query(&sql).bind(i64::from(version)).execute(conn).await?;
        });
    }
    Ok(())
}

/// Applies one calendar event: its current version replaces the last, a deletion removes it.
pub(super) async fn apply_calendar(
    tx: &mut Tx<'_>,
    version: u32,
    tenant: &str,
    calendar_id: &str,
    position: i64,
    event: DefinitionEvent<Calendar>,
) -> Result<(), ProjectionError> {
    let (calendar_version, calendar) = match event {
        DefinitionEvent::Created { version, definition, .. }
        | DefinitionEvent::Revised { version, definition, .. } => (version, definition),
        DefinitionEvent::Deleted { .. } => {
            let sql =
                "DELETE FROM report_calendars WHERE tenant_id = $1 AND version = $2 AND calendar_id = $3";
            on_tx!(tx, |conn| {
                sqlx::query(sql)
                    .bind(tenant)
                    .bind(i64::from(version))
                    .bind(calendar_id)
                    .execute(conn)
                    .await?;
            });
            return Ok(());
        }
    };
    let Ok(id) = uuid::Uuid::parse_str(calendar_id) else {
        tracing::warn!(calendar_id, "a calendar whose id is not a UUID: its facts count every hour");
        return Ok(());
    };
    let json =
        serde_json::to_string(&CalendarVersion { calendar_id: id, version: calendar_version, calendar })
            .map_err(codec)?;
    let sql = "INSERT INTO report_calendars (tenant_id, version, calendar_id, calendar, created_position)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (tenant_id, version, calendar_id) DO UPDATE SET calendar = excluded.calendar";
    on_tx!(tx, |conn| {
        let query = sqlx::query(sql).bind(tenant).bind(i64::from(version)).bind(calendar_id);
        query.bind(&json).bind(position).execute(conn).await?;
    });
    Ok(())
}

/// `tenant`'s live calendars as of the batch, oldest first.
pub(super) async fn calendars(
    tx: &mut Tx<'_>,
    version: u32,
    tenant: &str,
) -> Result<Vec<CalendarVersion>, ProjectionError> {
    let sql = "SELECT calendar FROM report_calendars WHERE tenant_id = $1 AND version = $2
                ORDER BY created_position";
    let rows: Vec<String> = on_tx!(tx, |conn| {
        sqlx::query_scalar(sql).bind(tenant).bind(i64::from(version)).fetch_all(conn).await?
    });
    rows.iter().map(|json| serde_json::from_str(json).map_err(codec)).collect()
}

/// The stored states of the conversations `keys` (tenant, conversation) name, in a few
/// statements: PostgreSQL takes them as two arrays, SQLite in multi-row chunks.
pub(super) async fn conversations(
    tx: &mut Tx<'_>,
    version: u32,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), ReportConversation>, ProjectionError> {
    let mut found = HashMap::with_capacity(keys.len());
    let mut rows: Vec<(String, String, String)> = Vec::new();
    match tx {
        Tx::Postgres(tx) => {
            let (tenants, ids): (Vec<&str>, Vec<&str>) =
                keys.iter().map(|(t, c)| (t.as_str(), c.as_str())).unzip();
            let sql = "SELECT r.tenant_id, r.conversation_id, r.state FROM report_conversations r
                         JOIN UNNEST($2::text[], $3::text[]) AS k(k_tenant, k_id)
                           ON r.tenant_id = k.k_tenant AND r.conversation_id = k.k_id
                        WHERE r.version = $1";
            rows = sqlx::query_as(sql)
                .bind(i64::from(version))
                .bind(tenants)
                .bind(ids)
                .fetch_all(&mut **tx)
                .await?;
        }
        Tx::Sqlite(tx) => {
            let mut remaining = keys;
            while !remaining.is_empty() {
                let (chunk, rest) = remaining.split_at(statement_rows(remaining.len()));
                remaining = rest;
                let sql = format!(
                    "SELECT tenant_id, conversation_id, state FROM report_conversations
                       JOIN (VALUES {}) AS k ON tenant_id = k.column1 AND conversation_id = k.column2
                      WHERE version = ?",
                    vec!["(?, ?)"; chunk.len()].join(", ")
                );
                let mut query = sqlx::query_as(&sql);
                for (tenant, id) in chunk {
                    query = query.bind(tenant).bind(id);
                }
                let chunk_rows: Vec<(String, String, String)> =
                    query.bind(i64::from(version)).fetch_all(&mut **tx).await?;
                rows.extend(chunk_rows);
            }
        }
    }
    for (tenant, id, json) in rows {
        found.insert((tenant, id), serde_json::from_str(&json).map_err(codec)?);
    }
    Ok(found)
}

/// Writes the states of the conversations a batch touched (those it saw the opening of).
pub(super) async fn write_conversations(
    tx: &mut Tx<'_>,
    version: u32,
    conversations: &BTreeMap<(String, String), ReportConversation>,
) -> Result<(), ProjectionError> {
    let mut rows = Vec::with_capacity(conversations.len());
    for ((tenant, id), state) in conversations {
        if state.opened.is_some() {
            rows.push((tenant, id, serde_json::to_string(state).map_err(codec)?));
        }
    }
    let mut remaining = &rows[..];
    while !remaining.is_empty() {
        let (chunk, rest) = remaining.split_at(statement_rows(remaining.len()));
        remaining = rest;
        let sql = format!(
            "INSERT INTO report_conversations (tenant_id, version, conversation_id, state) VALUES {}
             ON CONFLICT (tenant_id, version, conversation_id) DO UPDATE SET state = excluded.state",
            parameter_rows(numbered(tx), chunk.len(), 4)
        );
        on_tx!(tx, |conn| {
            let mut query = sqlx::query(&sql);
            for (tenant, id, json) in chunk {
                query = query.bind(*tenant).bind(i64::from(version)).bind(*id).bind(json);
            }
            query.execute(conn).await?;
        });
    }
    Ok(())
}

/// Writes a batch's facts, in log order: a full resolution supersedes the conversation's earlier
/// one (stored, or of the same batch).
pub(super) async fn write_facts(
    tx: &mut Tx<'_>,
    version: u32,
    facts: Vec<(String, Fact)>,
) -> Result<(), ProjectionError> {
    // For each superseding fact, the position of the next one of its conversation and metric.
    let mut superseded_at = vec![None; facts.len()];
    let mut latest: HashMap<(&str, &str, Metric), usize> = HashMap::new();
    let mut first_in_batch: BTreeMap<(&str, &str, &'static str), i64> = BTreeMap::new();
    for (index, (tenant, fact)) in facts.iter().enumerate() {
        if !fact.supersedes {
            continue;
        }
        let key = (tenant.as_str(), fact.conversation_id.as_str(), fact.metric);
        if let Some(earlier) = latest.insert(key, index) {
            superseded_at[earlier] = Some(fact.end_position);
        }
        first_in_batch.entry((key.0, key.1, fact.metric.as_str())).or_insert(fact.end_position);
    }
    // The stored facts superseded, as they were: they leave their cells.
    let mut removed = Vec::new();
    for ((tenant, conversation, metric), position) in first_in_batch {
        let sql = format!(
            "UPDATE report_facts SET superseded_at = $1
              WHERE tenant_id = $2 AND version = $3 AND conversation_id = $4 AND metric = $5
                AND superseded_at IS NULL AND end_position < $1
             RETURNING {}",
            query::COLUMNS
        );
        let rows: Vec<FactRow> = on_tx!(tx, |conn| {
            let query = sqlx::query(&sql).bind(position).bind(tenant).bind(i64::from(version));
            let rows = query.bind(conversation).bind(metric).fetch_all(conn).await?;
            rows.iter().map(query::fact_row).collect::<Result<_, _>>()?
        });
        removed.extend(rows.into_iter().map(|row| (tenant.to_owned(), row)));
    }
    let mut rows = Vec::with_capacity(facts.len());
    for ((tenant, fact), superseded) in facts.iter().zip(superseded_at) {
        rows.push((tenant, fact, serde_json::to_string(&fact.dimensions.labels).map_err(codec)?, superseded));
    }
    let mut inserted: HashSet<(i64, String)> = HashSet::with_capacity(rows.len());
    let mut remaining = &rows[..];
    while !remaining.is_empty() {
        let (chunk, rest) = remaining.split_at(statement_rows(remaining.len()));
        remaining = rest;
        let sql = format!(
            "INSERT INTO report_facts (tenant_id, version, end_position, metric, kind, conversation_id, contact_id,
                                       value, business_value, started_at, ended_at, start_position, agent_id,
                                       assignee_id, team_id, inbox_id, channel, priority, labels,
                                       group_conversation, bot, superseded_at)
             VALUES {} ON CONFLICT (tenant_id, version, end_position, metric) DO NOTHING
             RETURNING end_position, metric",
            parameter_rows(numbered(tx), chunk.len(), 22)
        );
        let written: Vec<(i64, String)> = on_tx!(tx, |conn| {
            let mut query = sqlx::query_as(&sql);
            for (tenant, fact, labels, superseded) in chunk {
                let dimensions = &fact.dimensions;
                query = query
                    .bind(*tenant)
                    .bind(i64::from(version))
                    .bind(fact.end_position)
                    .bind(fact.metric.as_str())
                    .bind(&fact.kind)
                    .bind(&fact.conversation_id)
                    .bind(&fact.contact_id)
                    .bind(fact.value)
                    .bind(fact.business_value)
                    .bind(fact.started_at)
                    .bind(fact.ended_at)
                    .bind(fact.start_position)
                    .bind(&dimensions.agent_id)
                    .bind(&dimensions.assignee_id)
                    .bind(&dimensions.team_id)
                    .bind(&dimensions.inbox_id)
                    .bind(&dimensions.channel)
                    .bind(&dimensions.priority)
                    .bind(labels)
                    .bind(dimensions.group)
                    .bind(dimensions.bot)
                    .bind(*superseded);
            }
            query.fetch_all(conn).await?
        });
        inserted.extend(written);
    }
    // The facts new to the store and current count in their cells (one a later fact of the same
    // batch superseded never does; one already stored, a replayed batch's, did before).
    let added: Vec<(String, FactRow)> = rows
        .iter()
        .filter(|(_, fact, _, superseded)| {
            superseded.is_none() && inserted.contains(&(fact.end_position, fact.metric.as_str().to_owned()))
        })
        .map(|(tenant, fact, _, _)| ((*tenant).clone(), row_of(fact)))
        .collect();
    rollups::count(tx, version, &added, &removed).await
}

/// A fact as the store reads it back.
fn row_of(fact: &Fact) -> FactRow {
    let dimensions = &fact.dimensions;
    FactRow {
        metric: fact.metric,
        kind: fact.kind.clone(),
        conversation_id: fact.conversation_id.clone(),
        contact_id: fact.contact_id.clone(),
        value: fact.value,
        business_value: fact.business_value,
        started_at: fact.started_at,
        ended_at: fact.ended_at,
        start_position: fact.start_position,
        end_position: fact.end_position,
        agent_id: dimensions.agent_id.clone(),
        assignee_id: dimensions.assignee_id.clone(),
        team_id: dimensions.team_id.clone(),
        inbox_id: dimensions.inbox_id.clone(),
        channel: dimensions.channel.clone(),
        priority: dimensions.priority.clone(),
        labels: dimensions.labels.clone(),
        group: dimensions.group,
        bot: dimensions.bot,
        superseded_at: None,
    }
}
