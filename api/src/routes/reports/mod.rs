//! Reports (`reports:read`): the facts of the reporting projection (`GET /v1/reports/events`, one
//! conversation's at `GET /v1/conversations/{id}/reports/events`), as JSON pages or streamed CSV,
//! and the figures folded from them ([`figures`]). Every answer names the definition version and
//! the log position it is as of; every figure links to the facts behind it, each fact to the
//! events that started and ended it.

pub mod definitions;
pub mod figures;

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use colloquy_domain::report::Metric;
use colloquy_projections::reports::query::{self, FactRow, Filter};
use colloquy_projections::reports::{self, Reports};

use crate::extract::{require, Auth, Path, Query};
use crate::instant::Instant;
use crate::problem::ApiError;
use crate::state::AppState;

/// The scope every report needs.
pub const SCOPE: &str = "reports:read";

/// The period a report covers when `since` is absent: 30 days before `until`.
pub const DEFAULT_DAYS: i64 = 30;

/// Facts per page when `limit` is absent.
const DEFAULT_LIMIT: i64 = 100;
/// Most facts per page.
const MAX_LIMIT: i64 = 1000;

/// The filters, period and version every report takes: the fields of each query struct of this
/// module, with its own after them.
macro_rules! report_query {
    ($(#[$meta:meta])* $name:ident { $($(#[$field_meta:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
        #[into_params(parameter_in = Query)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Facts that ended at or after this time (default: 30 days before `until`).
            pub since: Option<$crate::instant::Instant>,
            /// Facts that ended before this time (default: now).
            pub until: Option<$crate::instant::Instant>,
            /// The IANA time zone days, weeks and months are counted in (default `UTC`).
            #[param(value_type = Option<$crate::routes::reports::ZoneName>, inline, example = "Europe/Berlin")]
            pub tz: Option<String>,
            /// The metric definition version (default: the current one); one not kept is 404.
            #[param(minimum = 1)]
            pub version: Option<u32>,
            /// Only facts about this agent (who replied, else the assignee then).
            #[param(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
            pub agent_id: Option<String>,
            /// Only facts of conversations in this team then.
            #[param(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
            pub team_id: Option<String>,
            /// Only facts of this inbox.
            #[param(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
            pub inbox_id: Option<String>,
            /// Only facts of this channel.
            #[param(value_type = Option<colloquy_domain::Channel>)]
            pub channel: Option<String>,
            /// Only facts of conversations with this label then.
            #[param(pattern = r"^[^,\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]{1,64}$")]
            pub label: Option<String>,
            /// Only facts of conversations with this priority then.
            #[param(value_type = Option<colloquy_domain::conversation::Priority>)]
            pub priority: Option<String>,
            /// What the log said then: only facts recorded up to this global position, as the
            /// facts recorded later left them (a position past the facts' own is theirs).
            #[param(minimum = 0)]
            pub at_position: Option<i64>,
            /// Read-your-writes: wait until the facts reflect this global position.
            #[param(minimum = 0)]
            pub min_position: Option<i64>,
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl $name {
            /// The common fields, checked; the version defaults to the tenant's current one.
            pub async fn scope(
                &self,
                state: &$crate::state::AppState,
                tenant: &colloquy_domain::TenantId,
            ) -> Result<$crate::routes::reports::Scope, $crate::problem::ApiError> {
                let current = match self.version {
                    Some(_) => colloquy_domain::report::ESTABLISHED,
                    None => $crate::routes::reports::definitions::current(state, tenant).await?,
                };
                $crate::routes::reports::Scope::check(current, $crate::routes::reports::Common {
                    since: self.since,
                    until: self.until,
                    tz: self.tz.as_deref(),
                    version: self.version,
                    agent_id: &self.agent_id,
                    team_id: &self.team_id,
                    inbox_id: &self.inbox_id,
                    channel: &self.channel,
                    label: &self.label,
                    priority: &self.priority,
                    at_position: self.at_position,
                })
            }
        }
    };
}
pub(crate) use report_query;

/// The common fields as given.
#[derive(Debug)]
pub struct Common<'a> {
    since: Option<Instant>,
    until: Option<Instant>,
    tz: Option<&'a str>,
    version: Option<u32>,
    agent_id: &'a Option<String>,
    team_id: &'a Option<String>,
    inbox_id: &'a Option<String>,
    channel: &'a Option<String>,
    label: &'a Option<String>,
    priority: &'a Option<String>,
    at_position: Option<i64>,
}

/// What a report covers, checked: the period, zone, version and filter.
#[derive(Debug, Clone)]
pub struct Scope {
    /// From.
    pub since: DateTime<Utc>,
    /// To (excluded).
    pub until: DateTime<Utc>,
    /// The zone days are counted in.
    pub zone: Tz,
    /// The definition's projection.
    pub reports: Reports,
    /// The version.
    pub version: u32,
    /// The filter, with the period.
    pub filter: Filter,
}

fn short_id(field: &str, value: &Option<String>) -> Result<Option<String>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            colloquy_domain::validate::external_id(field, v)
                .map_err(|error| ApiError::invalid_field(&error.field, error.reason))
        })
        .transpose()
}

fn one_of<T: for<'de> Deserialize<'de>>(
    field: &str,
    value: &Option<String>,
    known: &str,
) -> Result<(), ApiError> {
    if let Some(value) = value {
        serde_json::from_value::<T>(serde_json::Value::String(value.clone()))
            .map_err(|_| ApiError::invalid_field(field, format!("{value:?} is not one of {known}")))?;
    }
    Ok(())
}

impl Scope {
    pub(crate) fn check(current: u32, common: Common<'_>) -> Result<Self, ApiError> {
        let until = common.until.map_or_else(Utc::now, Into::into);
        // A `since` at or after `until` is an empty period: every figure of it is zero.
        let since = common.since.map_or(until - Duration::days(DEFAULT_DAYS), Into::into).min(until);
        let zone: Tz = match common.tz {
            None => Tz::UTC,
            Some(name) => name
                .parse()
                .map_err(|_| ApiError::invalid_field("tz", format!("{name:?} is not an IANA time zone")))?,
        };
        let version = common.version.unwrap_or(current);
        let reports = Reports::of(version).ok_or_else(|| {
            let kept: Vec<String> = reports::VERSIONS.iter().map(|(v, _)| v.to_string()).collect();
            ApiError::not_found(format!("metric definition version {version} (kept: {})", kept.join(", ")))
        })?;
        one_of::<colloquy_domain::Channel>(
            "channel",
            common.channel,
            "whatsapp, instagram, email, sms, chat, phone",
        )?;
        one_of::<colloquy_domain::conversation::Priority>(
            "priority",
            common.priority,
            "low, medium, high, urgent",
        )?;
        let label = common
            .label
            .as_deref()
            .map(|label| {
                colloquy_domain::validate::label("label", label)
                    .map_err(|error| ApiError::invalid_field(&error.field, error.reason))
            })
            .transpose()?;
        if common.at_position.is_some_and(|p| p < 0) {
            return Err(ApiError::invalid_field("at_position", "must be 0 or more"));
        }
        let filter = Filter {
            since: Some(since),
            until: Some(until),
            agent_id: short_id("agent_id", common.agent_id)?,
            team_id: short_id("team_id", common.team_id)?,
            inbox_id: short_id("inbox_id", common.inbox_id)?,
            channel: common.channel.clone(),
            priority: common.priority.clone(),
            label,
            current_only: true,
            at_position: common.at_position,
            ..Filter::default()
        };
        Ok(Self { since, until, zone, reports, version, filter })
    }

    /// Waits for `min_position`, and returns the position the answer is as of: the
    /// projection's checkpoint, or `at_position` where that is earlier.
    pub async fn as_of(&self, state: &AppState, min_position: Option<i64>) -> Result<i64, ApiError> {
        use colloquy_projections::Projection;
        if min_position.is_some_and(|p| p < 0) {
            return Err(ApiError::invalid_field("min_position", "must be 0 or more"));
        }
        let name = self.reports.name();
        state.await_projection(name, min_position).await?;
        let applied = state.projectors().iter().find(|p| p.name() == name).map_or(0, |p| p.applied());
        Ok(self.filter.at_position.map_or(applied, |at| at.min(applied)))
    }
}

/// An IANA time zone's name (a schema only: every zone the server knows, as an enum).
#[derive(Debug)]
pub struct ZoneName;

impl utoipa::PartialSchema for ZoneName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|zone| zone.name()).collect();
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .description(Some("An IANA time zone, e.g. `Europe/Berlin`."))
            .into()
    }
}

impl utoipa::ToSchema for ZoneName {}

/// `metric`'s values, comma-separated.
pub fn metrics(field: &str, given: Option<&str>) -> Result<Vec<Metric>, ApiError> {
    let mut metrics = Vec::new();
    for name in given.unwrap_or_default().split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let metric = Metric::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
            ApiError::invalid_field(field, format!("{name:?} is not one of {}", known.join(", ")))
        })?;
        if !metrics.contains(&metric) {
            metrics.push(metric);
        }
    }
    Ok(metrics)
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// The URL of the facts `filter` selects (for a figure's drill-down).
pub fn facts_link(version: u32, filter: &Filter) -> String {
    let mut link = format!("/v1/reports/events?version={version}");
    let mut add = |name: &str, value: &str| {
        let _ = write!(link, "&{name}={}", encode(value));
    };
    if !filter.metrics.is_empty() {
        add("metric", &filter.metrics.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","));
    }
    for (name, value) in [
        ("kind", &filter.kind),
        ("agent_id", &filter.agent_id),
        ("team_id", &filter.team_id),
        ("inbox_id", &filter.inbox_id),
        ("channel", &filter.channel),
        ("priority", &filter.priority),
        ("label", &filter.label),
    ] {
        if let Some(value) = value {
            add(name, value);
        }
    }
    for (name, value) in [("since", filter.since), ("until", filter.until)] {
        if let Some(value) = value {
            add(name, &value.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        }
    }
    if let Some(position) = filter.at_position {
        add("at_position", &position.to_string());
    }
    link
}

report_query! {
    /// Query of `GET /v1/reports/events`.
    FactsQuery {
        /// Only these metrics (comma-separated), e.g. `first_response,reply_time`.
        #[param(example = "first_response,reply_time", pattern = r"^(conversation_opened|conversation_reopened|first_response|reply_time|resolution|first_resolution|full_resolution|bot_handoff|bot_resolution|requester_wait|agent_wait|sla_hit|sla_miss|incoming_message|outgoing_message|private_note)(,(conversation_opened|conversation_reopened|first_response|reply_time|resolution|first_resolution|full_resolution|bot_handoff|bot_resolution|requester_wait|agent_wait|sla_hit|sla_miss|incoming_message|outgoing_message|private_note))*$")]
        metric: Option<String>,
        /// Only facts of this kind (a message's sender kind, a wait's status, an SLA outcome's metric).
        #[param(pattern = r"^[a-z_]{1,64}$")]
        kind: Option<String>,
        /// Only facts of this conversation.
        conversation_id: Option<Uuid>,
        /// Only facts of this contact's conversations.
        contact_id: Option<Uuid>,
        /// Also the facts a later one replaced (an earlier full resolution).
        include_superseded: Option<bool>,
        /// Facts per page, 1 to 1000 (default 100). CSV answers every fact, unpaged.
        #[param(minimum = 1, maximum = 1000)]
        limit: Option<i64>,
        /// The `next_cursor` of the previous page.
        cursor: Option<String>,
    }
}

/// One fact, in the shape of seed 004's `reporting_event` where it maps.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FactView {
    /// Its identity: the log position that ended it, and its metric.
    id: String,
    /// What it measures (`first_response`, `reply_time`, `resolution`, ...).
    name: Metric,
    /// A finer kind: a message's sender kind, a wait's status, an SLA outcome's metric.
    kind: Option<String>,
    /// Wall-clock seconds, for a duration.
    value: Option<i64>,
    /// Seconds within the inbox's business hours, for a duration.
    value_in_business_hours: Option<i64>,
    /// When the measured span started.
    event_start_time: DateTime<Utc>,
    /// When it ended; the time it is reported at.
    event_end_time: DateTime<Utc>,
    /// The conversation.
    conversation_id: String,
    /// Its contact.
    contact_id: String,
    /// The agent it is about: who replied, else the assignee then.
    user_id: Option<String>,
    /// The assignee then.
    assignee_id: Option<String>,
    /// The team then.
    team_id: Option<String>,
    /// The inbox.
    inbox_id: Option<String>,
    /// The channel.
    channel: String,
    /// The priority then.
    priority: String,
    /// The labels then.
    labels: Vec<String>,
    /// A group conversation.
    group: bool,
    /// A bot or AI assistant had taken part by then.
    bot: bool,
    /// The global position of the event that started it.
    start_position: i64,
    /// The global position of the event that ended it.
    end_position: i64,
    /// The position of the fact that replaced it, if one did.
    superseded_at: Option<i64>,
    /// The events that started and ended it, in the global log.
    events: Vec<String>,
}

impl FactView {
    fn from_row(row: FactRow) -> Self {
        let link = |position: i64| format!("/v1/events?after={}&limit=1", position - 1);
        let mut events = vec![link(row.start_position)];
        if row.end_position != row.start_position {
            events.push(link(row.end_position));
        }
        Self {
            id: format!("{}:{}", row.end_position, row.metric.as_str()),
            name: row.metric,
            kind: row.kind,
            value: row.value,
            value_in_business_hours: row.business_value,
            event_start_time: row.started_at,
            event_end_time: row.ended_at,
            conversation_id: row.conversation_id,
            contact_id: row.contact_id,
            user_id: row.agent_id,
            assignee_id: row.assignee_id,
            team_id: row.team_id,
            inbox_id: row.inbox_id,
            channel: row.channel,
            priority: row.priority,
            labels: row.labels,
            group: row.group,
            bot: row.bot,
            start_position: row.start_position,
            end_position: row.end_position,
            superseded_at: row.superseded_at,
            events,
        }
    }
}

/// A page of facts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FactsPage {
    /// The facts, in log order.
    data: Vec<FactView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
    /// The metric definition version.
    version: u32,
    /// The global position the facts are as of.
    as_of_position: i64,
}

/// The CSV header of facts.
const FACTS_CSV_HEADER: [&str; 21] = [
    "id",
    "name",
    "kind",
    "value",
    "value_in_business_hours",
    "event_start_time",
    "event_end_time",
    "conversation_id",
    "contact_id",
    "user_id",
    "assignee_id",
    "team_id",
    "inbox_id",
    "channel",
    "priority",
    "labels",
    "group",
    "bot",
    "start_position",
    "end_position",
    "superseded_at",
];

fn fact_record(row: &FactRow) -> Vec<String> {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let number = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
    let time = |at: DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    vec![
        format!("{}:{}", row.end_position, row.metric.as_str()),
        row.metric.as_str().to_owned(),
        text(&row.kind),
        number(row.value),
        number(row.business_value),
        time(row.started_at),
        time(row.ended_at),
        row.conversation_id.clone(),
        row.contact_id.clone(),
        text(&row.agent_id),
        text(&row.assignee_id),
        text(&row.team_id),
        text(&row.inbox_id),
        row.channel.clone(),
        row.priority.clone(),
        row.labels.join(";"),
        row.group.to_string(),
        row.bot.to_string(),
        row.start_position.to_string(),
        row.end_position.to_string(),
        number(row.superseded_at),
    ]
}

/// One CSV line of `fields`.
pub fn csv_line<S: AsRef<str>>(fields: &[S]) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new().from_writer(Vec::new());
    // Writing to memory fails only on a bad record shape, which these never have.
    let _ = writer.write_record(fields.iter().map(AsRef::as_ref));
    writer.into_inner().unwrap_or_default()
}

/// Whether the client asked for CSV (`Accept: text/csv`).
pub fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| media.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv")))
}

/// A CSV answer of `lines` (the header first).
pub fn csv_response(body: axum::body::Body, name: &str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.csv\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// Streams every fact `filter` selects as CSV, one row per fact, without holding them.
fn stream_facts_csv(
    state: &AppState,
    tenant: colloquy_domain::TenantId,
    version: u32,
    filter: Filter,
) -> Response {
    let (rows, mut rows_in) = tokio::sync::mpsc::channel::<FactRow>(256);
    let (lines, lines_in) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    let store = state.store().clone();
    tokio::spawn(async move {
        // The reader waits while the client is slow; a gone client ends both.
        let reading = query::each(&store, &tenant, version, &filter, rows);
        let writing = async {
            if lines.send(Ok(csv_line(&FACTS_CSV_HEADER))).await.is_err() {
                return;
            }
            while let Some(row) = rows_in.recv().await {
                if lines.send(Ok(csv_line(&fact_record(&row)))).await.is_err() {
                    return;
                }
            }
        };
        let (read, ()) = tokio::join!(reading, writing);
        if let Err(error) = read {
            tracing::error!(%error, "streaming facts as CSV failed");
            // Ends the body with an error, so the client sees a broken transfer, not a short file.
            let _ = lines.send(Err(std::io::Error::other("the facts could not be read"))).await;
        }
    });
    let stream = futures::stream::unfold(lines_in, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    csv_response(axum::body::Body::from_stream(stream), "facts")
}

fn cursor_of(row: &FactRow) -> String {
    URL_SAFE_NO_PAD.encode(format!("facts:{}:{}", row.end_position, row.metric.as_str()))
}

fn parse_cursor(text: &str) -> Result<query::Cursor, ApiError> {
    let bad = || ApiError::invalid_field("cursor", "is not a cursor this list issued");
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ':');
    let (Some("facts"), Some(position), Some(metric)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let position: i64 = position.parse().map_err(|_| bad())?;
    // `facts:0:` (`ZmFjdHM6MDo`) is the first page's cursor.
    if !(metric.is_empty() || Metric::parse(metric).is_some()) {
        return Err(bad());
    }
    Ok((position, metric.to_owned()))
}

async fn facts_answer(
    state: &AppState,
    principal: &colloquy_infra::tokens::Principal,
    query: &FactsQuery,
    conversation: Option<Uuid>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    require(principal, SCOPE)?;
    let mut scope = query.scope(state, &principal.tenant).await?;
    // The facts listing covers all time unless a period is given.
    scope.filter.since = query.since.map(Into::into);
    scope.filter.until = query.until.map(Into::into);
    scope.filter.metrics = metrics("metric", query.metric.as_deref())?;
    scope.filter.kind = query.kind.clone();
    scope.filter.conversation_id = conversation.or(query.conversation_id).map(|id| id.to_string());
    scope.filter.contact_id = query.contact_id.map(|id| id.to_string());
    scope.filter.current_only = query.include_superseded != Some(true);
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return Err(ApiError::invalid_field("limit", format!("must be 1 to {MAX_LIMIT}"))),
    };
    let after = query.cursor.as_deref().filter(|c| !c.is_empty()).map(parse_cursor).transpose()?;
    let as_of = scope.as_of(state, query.min_position).await?;
    if wants_csv(headers) {
        return Ok(stream_facts_csv(state, principal.tenant.clone(), scope.version, scope.filter));
    }
    let mut rows = query::facts(
        state.store(),
        &principal.tenant,
        scope.version,
        &scope.filter,
        after.as_ref(),
        limit + 1,
    )
    .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more { rows.last().map(cursor_of) } else { None };
    let page = FactsPage {
        data: rows.into_iter().map(FactView::from_row).collect(),
        next_cursor,
        version: scope.version,
        as_of_position: as_of,
    };
    Ok(axum::Json(page).into_response())
}

/// `GET /v1/reports/events`
#[utoipa::path(
    get,
    path = "/reports/events",
    tag = "reports",
    summary = "List reporting facts",
    description = "The facts the reports are folded from, one per measured span (first response, each reply time, \
        each resolution, time in statuses, bot handoffs, SLA outcomes) or counted happening (openings, messages), \
        with the dimensions as they were then, in log order. All time unless `since` or `until` is given. \
        `Accept: text/csv` streams every matching fact as CSV, one row each.",
    params(FactsQuery),
    responses((status = 200, description = "A page of facts (or every fact as CSV).",
        content((FactsPage = "application/json"), (String = "text/csv"))), (status = 404, response = crate::openapi::NotFound))
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Query(query): Query<FactsQuery>,
) -> Result<Response, ApiError> {
    facts_answer(&state, &principal, &query, None, &headers).await
}

/// `GET /v1/conversations/{id}/reports/events`
#[utoipa::path(
    get,
    path = "/conversations/{id}/reports/events",
    tag = "reports",
    summary = "List one conversation's reporting facts",
    description = "The facts of one conversation, in log order; as `GET /v1/reports/events?conversation_id=`. \
        A conversation that does not exist (in this tenant) is 404.",
    params(("id" = Uuid, Path, description = "The conversation."), FactsQuery),
    responses((status = 200, description = "A page of its facts (or every one as CSV).",
        content((FactsPage = "application/json"), (String = "text/csv"))), (status = 404, response = crate::openapi::NotFound))
)]
pub async fn of_conversation(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Query(query): Query<FactsQuery>,
) -> Result<Response, ApiError> {
    require(&principal, SCOPE)?;
    let first = state.store().stream_page(&principal.tenant, "conversation", &id.to_string(), 0, 1).await?;
    if first.is_empty() {
        return Err(ApiError::not_found(format!("conversation {id}")));
    }
    facts_answer(&state, &principal, &query, Some(id), &headers).await
}
