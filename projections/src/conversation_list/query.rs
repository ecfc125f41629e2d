//! Lists and counts over the inbox read model: filters, sorts, keyset cursors.
//!
//! A list statement is assembled from the filters present, so each shape gets its own plan and
//! reads the index that leads with its most selective filter (see the migration
//! `*_inbox.sql`). Every statement is one-shot (`persistent(false)`): PostgreSQL plans it with
//! the actual values, and a generic plan never picks the wrong index for a skewed value.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::Row;

use colloquy_domain::conversation::{GroupType, Priority, Status};
use colloquy_domain::sla::{Due, DueState};
use colloquy_domain::Channel;
use colloquy_infra::{Store, StoreError};

use super::store::{decode, COLUMNS};
use super::{name_of, ConversationRow};

/// What a list is ordered by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    /// Latest message, status or assignment change (the default).
    #[default]
    LastActivityAt,
    /// Opening time.
    CreatedAt,
    /// Priority, then latest activity.
    Priority,
    /// Since when the customer waits for a human answer; lists only conversations that wait.
    WaitingSince,
    /// The next due of a running SLA timer; lists only conversations with one.
    SlaDueAt,
}

impl SortKey {
    /// Every key, by its query name.
    pub const ALL: [(&'static str, SortKey); 5] = [
        ("last_activity_at", Self::LastActivityAt),
        ("created_at", Self::CreatedAt),
        ("priority", Self::Priority),
        ("waiting_since", Self::WaitingSince),
        ("sla_due_at", Self::SlaDueAt),
    ];

    /// The query name.
    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, key)| *key == self).map_or("last_activity_at", |(name, _)| name)
    }

    /// The key called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, key)| *key)
    }

    /// The direction used when none is asked for: newest or most urgent first, the
    /// longest-waiting customer first, and the soonest (or most overdue) SLA first.
    pub fn default_direction(self) -> Direction {
        match self {
            Self::WaitingSince | Self::SlaDueAt => Direction::Asc,
            _ => Direction::Desc,
        }
    }

    fn columns(self) -> &'static [&'static str] {
        match self {
            Self::LastActivityAt => &["last_activity_at", "conversation_id"],
            Self::CreatedAt => &["created_at", "conversation_id"],
            Self::Priority => &["priority_rank", "last_activity_at", "conversation_id"],
            Self::WaitingSince => &["waiting_since", "conversation_id"],
            Self::SlaDueAt => &["sla_next_due_at", "conversation_id"],
        }
    }

    /// What a row needs to be listed in this order at all.
    fn condition(self) -> Option<&'static str> {
        match self {
            Self::WaitingSince => Some("waiting_since IS NOT NULL"),
            Self::SlaDueAt => Some("sla_next_due_at IS NOT NULL"),
            _ => None,
        }
    }
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Direction {
    /// Smallest first.
    Asc,
    /// Largest first.
    #[default]
    Desc,
}

impl Direction {
    /// The query name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }

    /// The direction called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "asc" => Some(Self::Asc),
            "desc" => Some(Self::Desc),
            _ => None,
        }
    }
}

/// A sort key and direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sort {
    /// What to order by.
    pub key: SortKey,
    /// Which way.
    pub direction: Direction,
}

/// How several labels combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LabelMatch {
    /// A conversation carries every label asked for.
    #[default]
    All,
    /// A conversation carries at least one.
    Any,
}

/// Which conversations a list holds. Empty and `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    /// Any of these statuses.
    pub statuses: Vec<Status>,
    /// Any of these priorities.
    pub priorities: Vec<Priority>,
    /// Assigned to this user.
    pub assignee_id: Option<String>,
    /// Assigned to no user.
    pub unassigned: bool,
    /// Assigned to this team.
    pub team_id: Option<String>,
    /// In this inbox.
    pub inbox_id: Option<String>,
    /// With this contact.
    pub contact_id: Option<String>,
    /// Over any of these channels.
    pub channels: Vec<Channel>,
    /// One-to-one or group.
    pub group_type: Option<GroupType>,
    /// In this group chat.
    pub group_id: Option<String>,
    /// Carrying these labels, combined by `label_match`.
    pub labels: Vec<String>,
    /// How `labels` combine.
    pub label_match: LabelMatch,
    /// Starred or not.
    pub starred: Option<bool>,
    /// The customer spoke last (true) or not (false).
    pub awaiting_response: Option<bool>,
    /// This user sent a message in it.
    pub participating: Option<String>,
    /// This user was mentioned in it.
    pub mentioned: Option<String>,
    /// Opened at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Opened before.
    pub created_before: Option<DateTime<Utc>>,
    /// Last activity at or after.
    pub last_activity_after: Option<DateTime<Utc>>,
    /// Last activity before.
    pub last_activity_before: Option<DateTime<Utc>>,
    /// Words in the subject, the contact's name, e-mail or phone, or the last message.
    pub q: Option<String>,
    /// Standing against the SLA in any of these states.
    pub sla_states: Vec<DueState>,
}

/// Where a page ends, in a list's sort order: the last row's sort values and id. Opaque to
/// clients; bound to the sort it was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The sort it continues.
    pub sort: Sort,
    /// The last row's priority rank (for `sort=priority`).
    pub rank: i64,
    /// The last row's time in the sort (activity, creation or waiting time).
    pub at: DateTime<Utc>,
    /// The last row's id.
    pub id: String,
}

impl Cursor {
    /// The cursor after `row` (with its SLA, `due`) in `sort`.
    pub fn after(row: &ConversationRow, due: Option<&Due>, sort: Sort) -> Self {
        let at = match sort.key {
            SortKey::LastActivityAt | SortKey::Priority => row.last_activity_at,
            SortKey::CreatedAt => row.created_at,
            SortKey::WaitingSince => row.waiting_since.unwrap_or(row.last_activity_at),
            SortKey::SlaDueAt => due.and_then(|d| d.next_due_at).unwrap_or(row.last_activity_at),
        };
        Self { sort, rank: row.priority_rank(), at, id: row.id.clone() }
    }

    /// The opaque form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "c1|{}|{}|{}|{}|{}",
            self.sort.key.as_str(),
            self.sort.direction.as_str(),
            self.rank,
            self.at.to_rfc3339_opts(SecondsFormat::Nanos, true),
            self.id
        ))
    }

    /// Reads an opaque cursor; `None` when it is not one this module issued.
    pub fn decode(text: &str) -> Option<Self> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
        let mut parts = raw.splitn(6, '|');
        if parts.next()? != "c1" {
            return None;
        }
        let key = SortKey::parse(parts.next()?)?;
        let direction = Direction::parse(parts.next()?)?;
        let rank = parts.next()?.parse().ok()?;
        let at = DateTime::parse_from_rfc3339(parts.next()?).ok()?.with_timezone(&Utc);
        let id = parts.next()?.to_owned();
        Some(Self { sort: Sort { key, direction }, rank, at, id })
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The rows, in order.
    pub rows: Vec<ConversationRow>,
    /// Each row's SLA, in the same order (as the SLA projection has it).
    pub sla: Vec<Option<Due>>,
    /// Where the next page starts, when there is one.
    pub next: Option<Cursor>,
}

/// A bound value.
enum Param {
    Text(String),
    Time(DateTime<Utc>),
    Int(i64),
}

/// A statement under construction with `$n` placeholders.
struct Statement {
    postgres: bool,
    conditions: Vec<String>,
    params: Vec<Param>,
}

impl Statement {
    fn param(&mut self, value: Param) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    fn text(&mut self, value: impl Into<String>) -> String {
        self.param(Param::Text(value.into()))
    }

    fn time(&mut self, value: DateTime<Utc>) -> String {
        self.param(Param::Time(value))
    }

    fn any_of(&mut self, column: &str, values: Vec<String>) {
        match values.len() {
            0 => {}
            1 => {
                let p = self.text(values.into_iter().next().unwrap_or_default());
                self.conditions.push(format!("{column} = {p}"));
            }
            _ => {
                let params: Vec<String> = values.into_iter().map(|v| self.text(v)).collect();
                self.conditions.push(format!("{column} IN ({})", params.join(", ")));
            }
        }
    }

    /// `column` (a JSON array of strings) holds `value`: a case-sensitive substring test for
    /// the value's JSON form, quotes included, so "ab" never matches "abc".
    fn holds(&mut self, column: &str, value: &str) -> String {
        let needle = serde_json::to_string(value).unwrap_or_default();
        let p = self.text(needle);
        if self.postgres {
            format!("strpos({column}, {p}) > 0")
        } else {
            format!("instr({column}, {p}) > 0")
        }
    }
}

fn like_pattern(words: &str) -> String {
    let mut pattern = String::from("%");
    for c in words.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn conditions(filter: &ListFilter, statement: &mut Statement) {
    let s = statement;
    s.any_of("status", filter.statuses.iter().map(|v| v.as_str().to_owned()).collect());
    s.any_of("priority", filter.priorities.iter().map(name_of).collect());
    s.any_of("channel", filter.channels.iter().map(|c| c.as_str().to_owned()).collect());
    if let Some(group_type) = filter.group_type {
        s.any_of("group_type", vec![name_of(&group_type)]);
    }
    for (column, value) in [
        ("assignee_id", &filter.assignee_id),
        ("team_id", &filter.team_id),
        ("inbox_id", &filter.inbox_id),
        ("contact_id", &filter.contact_id),
        ("group_id", &filter.group_id),
    ] {
        if let Some(value) = value {
            let p = s.text(value.clone());
            s.conditions.push(format!("{column} = {p}"));
        }
    }
    if filter.unassigned {
        s.conditions.push("assignee_id IS NULL".into());
    }
    if !filter.labels.is_empty() {
        let tests: Vec<String> = filter.labels.iter().map(|l| s.holds("labels", l)).collect();
        let joined = match filter.label_match {
            LabelMatch::All => tests.join(" AND "),
            LabelMatch::Any => tests.join(" OR "),
        };
        s.conditions.push(format!("({joined})"));
    }
    match filter.starred {
        Some(true) => s.conditions.push("starred".into()),
        Some(false) => s.conditions.push("NOT starred".into()),
        None => {}
    }
    match filter.awaiting_response {
        Some(true) => s.conditions.push("last_responder = 'customer'".into()),
        Some(false) => s.conditions.push("(last_responder IS NULL OR last_responder <> 'customer')".into()),
        None => {}
    }
    if let Some(user) = &filter.participating {
        let test = s.holds("participants", user);
        s.conditions.push(test);
    }
    if let Some(user) = &filter.mentioned {
        let test = s.holds("mentioned", user);
        s.conditions.push(test);
    }
    for (column, op, value) in [
        ("created_at", ">=", filter.created_after),
        ("created_at", "<", filter.created_before),
        ("last_activity_at", ">=", filter.last_activity_after),
        ("last_activity_at", "<", filter.last_activity_before),
    ] {
        if let Some(value) = value {
            let p = s.time(value);
            s.conditions.push(format!("{column} {op} {p}"));
        }
    }
    if let Some(q) = filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        let p = s.text(like_pattern(q));
        s.conditions.push(format!("search LIKE {p} ESCAPE '\\'"));
    }
    s.any_of("sla_state", filter.sla_states.iter().map(|state| state.as_str().to_owned()).collect());
}

/// The list's table: each row with its SLA (the SLA projection's `sla_inbox`, whose columns'
/// names are all `sla_`-prefixed, so none is ambiguous).
const LISTED: &str = "conversation_list LEFT JOIN sla_inbox
    ON sla_tenant_id = tenant_id AND sla_conversation_id = conversation_id";

macro_rules! bind_all {
    ($query:expr, $params:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                Param::Text(v) => query.bind(v),
                Param::Time(v) => query.bind(v),
                Param::Int(v) => query.bind(v),
            };
        }
        query
    }};
}

/// One page of a tenant's live (not deleted) conversations matching `filter`, in `sort` order,
/// after `after`. Rows that existed when a walk began are each seen once, as long as their sort
/// values do not change meanwhile; new rows sort before the walk's position in the default
/// newest-first order.
pub async fn list(
    store: &Store,
    tenant: &str,
    filter: &ListFilter,
    sort: Sort,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<Page, StoreError> {
    let mut s = Statement { postgres: store.is_postgres(), conditions: Vec::new(), params: Vec::new() };
    let tenant_param = s.text(tenant);
    s.conditions.push(format!("tenant_id = {tenant_param}"));
    s.conditions.push("NOT deleted".into());
    conditions(filter, &mut s);
    s.conditions.extend(sort.key.condition().map(str::to_owned));
    let columns = sort.key.columns();
    if let Some(cursor) = after {
        let mut values = Vec::new();
        if sort.key == SortKey::Priority {
            values.push(s.param(Param::Int(cursor.rank)));
        }
        values.push(s.time(cursor.at));
        values.push(s.text(cursor.id.clone()));
        let op = match sort.direction {
            Direction::Asc => ">",
            Direction::Desc => "<",
        };
        s.conditions.push(format!("({}) {op} ({})", columns.join(", "), values.join(", ")));
    }
    let direction = match sort.direction {
        Direction::Asc => "ASC",
        Direction::Desc => "DESC",
    };
    let order: Vec<String> = columns.iter().map(|c| format!("{c} {direction}")).collect();
    // The limit is written into the statement: a bound LIMIT makes PostgreSQL plan for an
    // unknown row count. One more row than asked tells whether a next page exists.
    let fetch = limit.clamp(1, 1_000) + 1;
    let sql = format!(
        "SELECT {COLUMNS}, sla_state, sla_next_due_at FROM {LISTED} WHERE {} ORDER BY {} LIMIT {fetch}",
        s.conditions.join(" AND "),
        order.join(", ")
    );
    let params = s.params;
    let mut listed =
        colloquy_infra::on_pool!(store, |pool| bind_all!(sqlx::query(&sql).persistent(false), params)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((decode(row)?, sla_of(row)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?);
    let next = (listed.len() > limit).then(|| {
        listed.truncate(limit);
        listed.last().map(|(row, due)| Cursor::after(row, due.as_ref(), sort))
    });
    let (rows, sla) = listed.into_iter().unzip();
    Ok(Page { rows, sla, next: next.flatten() })
}

/// The statement `list` would run, for EXPLAIN in benchmarks and tests.
pub fn explainable(filter: &ListFilter, sort: Sort, postgres: bool) -> (String, usize) {
    let mut s = Statement {
        postgres,
        conditions: vec!["tenant_id = $1".into(), "NOT deleted".into()],
        params: vec![Param::Int(0)],
    };
    conditions(filter, &mut s);
    s.conditions.extend(sort.key.condition().map(str::to_owned));
    let direction = if sort.direction == Direction::Asc { "ASC" } else { "DESC" };
    let order: Vec<String> = sort.key.columns().iter().map(|c| format!("{c} {direction}")).collect();
    (
        format!(
            "SELECT {COLUMNS}, sla_state, sla_next_due_at FROM {LISTED} WHERE {} ORDER BY {} LIMIT 26",
            s.conditions.join(" AND "),
            order.join(", ")
        ),
        s.params.len(),
    )
}

/// A listed row's SLA, from its `sla_inbox` columns.
fn sla_of<R>(row: &R) -> Result<Option<Due>, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<DateTime<Utc>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let Some(state) = row.try_get::<Option<String>, _>("sla_state")? else { return Ok(None) };
    let state = DueState::parse(&state)
        .ok_or_else(|| sqlx::Error::Decode(format!("{state:?} is not an SLA state").into()))?;
    Ok(Some(Due { state, next_due_at: row.try_get("sla_next_due_at")? }))
}

/// One conversation's row, if it belongs to `tenant` (deleted ones included).
pub async fn get(store: &Store, tenant: &str, id: &str) -> Result<Option<ConversationRow>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM conversation_list WHERE conversation_id = $1 AND tenant_id = $2");
    let row = colloquy_infra::on_pool!(store, |pool| sqlx::query(&sql)
        .bind(id)
        .bind(tenant)
        .fetch_optional(pool)
        .await?
        .map(|r| decode(&r))
        .transpose()?);
    Ok(row)
}

/// The ids of `tenant`'s conversations opened in `[from, to)`, oldest first, at most `limit`
/// (deleted ones included: their history is still history).
pub async fn opened_between(
    store: &Store,
    tenant: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let sql = "SELECT conversation_id FROM conversation_list
                WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3
                ORDER BY created_at, conversation_id LIMIT $4";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let ids = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query_scalar(sql).bind(tenant).bind(from).bind(to).bind(limit).fetch_all(pool).await?
    });
    Ok(ids)
}

/// Conversation counts of a tenant, from the projector's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Live conversations per status (every status listed, zeros included).
    pub by_status: BTreeMap<String, i64>,
    /// The statuses `all`, `mine` and `unassigned` count.
    pub statuses: Vec<String>,
    /// Conversations in those statuses.
    pub all: i64,
    /// Of those, assigned to the user asked about (absent when none was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mine: Option<i64>,
    /// Of those, assigned to no user.
    pub unassigned: i64,
}

/// Counts per status, and all / mine / unassigned within `statuses` (every status when empty),
/// read from the counters: a few hundred rows at most, whatever the number of conversations.
pub async fn counts(
    store: &Store,
    tenant: &str,
    statuses: &[Status],
    user: Option<&str>,
) -> Result<Counts, StoreError> {
    let sql =
        "SELECT status, assignee_id, count FROM conversation_counts WHERE tenant_id = $1 AND count <> 0";
    let rows: Vec<(String, String, i64)> =
        colloquy_infra::on_pool!(store, |pool| sqlx::query_as(sql).bind(tenant).fetch_all(pool).await?);
    let chosen: Vec<&str> = if statuses.is_empty() {
        Status::ALL.iter().map(|s| s.as_str()).collect()
    } else {
        statuses.iter().map(|s| s.as_str()).collect()
    };
    let mut counts = Counts {
        by_status: Status::ALL.iter().map(|s| (s.as_str().to_owned(), 0)).collect(),
        statuses: chosen.iter().map(|s| (*s).to_owned()).collect(),
        mine: user.map(|_| 0),
        ..Counts::default()
    };
    for (status, assignee, count) in rows {
        *counts.by_status.entry(status.clone()).or_default() += count;
        if !chosen.contains(&status.as_str()) {
            continue;
        }
        counts.all += count;
        if assignee.is_empty() {
            counts.unassigned += count;
        }
        if let (Some(mine), Some(user)) = (counts.mine.as_mut(), user) {
            if assignee == user {
                *mine += count;
            }
        }
    }
    Ok(counts)
}

/// The contacts of `tenant` whose phone is `phone` (E.164), oldest first, as the contact
/// summaries this read model keeps know them (moments behind the store).
pub async fn contacts_with_phone(
    store: &Store,
    tenant: &str,
    phone: &str,
) -> Result<Vec<String>, StoreError> {
    let sql = "SELECT contact_id FROM conversation_list_contacts WHERE tenant_id = $1 AND phone = $2
               ORDER BY contact_id";
    let ids = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query_scalar::<_, String>(sql).bind(tenant).bind(phone).fetch_all(pool).await?
    });
    Ok(ids)
}

/// Every row, ordered by id: for comparing the read model with a rebuild.
pub async fn dump(store: &Store) -> Result<Vec<ConversationRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM conversation_list ORDER BY conversation_id");
    let rows = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query(&sql).fetch_all(pool).await?.iter().map(decode).collect::<Result<Vec<_>, _>>()?
    });
    Ok(rows)
}

/// How many of `tenant`'s live conversations in `status` wait for a reply (the customer spoke
/// last): the unattended ones.
pub async fn count_waiting(store: &Store, tenant: &str, status: Status) -> Result<i64, StoreError> {
    let sql = "SELECT count(*) FROM conversation_list
                WHERE tenant_id = $1 AND status = $2 AND NOT deleted AND last_responder = 'customer'";
    let count = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query_scalar(sql).bind(tenant).bind(status.as_str()).fetch_one(pool).await?
    });
    Ok(count)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written_and_refuses_anything_else() {
        let cursor = Cursor {
            sort: Sort { key: SortKey::Priority, direction: Direction::Asc },
            rank: 3,
            at: Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single().expect("valid time"),
            id: "0193|odd".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("not-a-cursor"), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("c1|bogus|asc|0|x|y")), None);
    }

    #[test]
    fn like_patterns_escape_wildcards_and_lowercase() {
        assert_eq!(like_pattern("50%_Off\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn filters_become_conditions_with_numbered_parameters() {
        let filter = ListFilter {
            statuses: vec![Status::Open, Status::Pending],
            assignee_id: Some("u1".into()),
            labels: vec!["vip".into(), "billing".into()],
            label_match: LabelMatch::Any,
            starred: Some(true),
            ..ListFilter::default()
        };
        let (sql, params) = explainable(&filter, Sort::default(), true);
        assert!(sql.contains("status IN ($2, $3)"), "{sql}");
        assert!(sql.contains("assignee_id = $4"), "{sql}");
        assert!(sql.contains("(strpos(labels, $5) > 0 OR strpos(labels, $6) > 0)"), "{sql}");
        assert!(sql.contains("AND starred"), "{sql}");
        assert!(sql.ends_with("ORDER BY last_activity_at DESC, conversation_id DESC LIMIT 26"), "{sql}");
        assert_eq!(params, 6);
        let (sqlite, _) = explainable(&filter, Sort::default(), false);
        assert!(sqlite.contains("instr(labels, $5) > 0"), "{sqlite}");
    }
}
