//! The inbox: `GET /v1/conversations` (filters, sorts, keyset cursors), `GET
//! /v1/conversations/counts` and `POST /v1/conversations/resolve`, all over the
//! `conversation_list` read model.

use axum::extract::State;
use axum::http::HeaderMap;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use colloquy_domain::conversation::{GroupType, Priority, Status};
use colloquy_domain::sla::DueState;
use colloquy_domain::{Channel, ConversationCommand};
use colloquy_infra::tokens::Principal;
use colloquy_infra::Intent;
use colloquy_projections::conversation_list::{
    self, Counts, Cursor, Direction, LabelMatch, ListFilter, Sort, SortKey,
};

use crate::bounded::MAX_FILTER_VALUES;
use crate::extract::{require, Auth, Json, Query};
use crate::instant::Instant;
use crate::problem::{command_failed, ApiError};
use crate::routes::origin;
use crate::state::AppState;
use crate::views::{ConversationView, Page};

/// Conversations per page when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 25;
/// Most conversations per page: the API's one page limit.
pub use crate::paging::MAX_LIMIT;
/// Most conversations one bulk resolve closes; a larger match answers `truncated: true`.
pub const MAX_BULK: usize = 5_000;
/// Bulk commands in flight at once.
const BULK_CONCURRENCY: usize = 8;

/// One value or several: `status=open,pending` in a query, `"open,pending"` or
/// `["open", "pending"]` in a JSON body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A comma-separated list.
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values, at most [`MAX_FILTER_VALUES`] of them: counted before any is copied or
    /// checked, so a long list costs no per-value work.
    fn values(field: &str, given: &Option<Self>) -> Result<Vec<String>, ApiError> {
        let pieces: Vec<&str> = match given {
            None => Vec::new(),
            Some(Self::One(text)) => text.split(',').take(MAX_FILTER_VALUES + 1).collect(),
            Some(Self::Many(values)) => {
                values.iter().flat_map(|v| v.split(',')).take(MAX_FILTER_VALUES + 1).collect()
            }
        };
        if pieces.len() > MAX_FILTER_VALUES {
            return Err(ApiError::invalid_field(
                field,
                format!("at most {MAX_FILTER_VALUES} values are allowed"),
            ));
        }
        Ok(pieces.into_iter().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect())
    }
}

/// The filters of a conversation list, as a query string (`GET /v1/conversations`) or a JSON
/// body (`POST /v1/conversations/resolve`), with the same names in both. The paging fields
/// apply to lists, `ids` to bulk resolve.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[schema(example = json!({"status": ["open", "pending"], "label": "spam"}))]
#[serde(deny_unknown_fields)]
pub struct InboxParams {
    /// Statuses to include: `open`, `pending`, `snoozed`, `closed`, `bot` (comma-separated).
    #[param(value_type = Option<Vec<Status>>, style = Form, explode = false, max_items = 50)]
    #[param(example = json!(["open", "pending"]))]
    status: Option<OneOrMany>,
    /// Priorities to include: `low`, `medium`, `high`, `urgent` (comma-separated).
    #[param(value_type = Option<Vec<Priority>>, style = Form, explode = false, max_items = 50)]
    priority: Option<OneOrMany>,
    /// Only conversations assigned to this user.
    #[param(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
    #[schema(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
    assignee_id: Option<String>,
    /// Only conversations assigned to no user (with `assignee_id` too, as every filter is
    /// combined with the others, nothing matches).
    unassigned: Option<bool>,
    /// Only conversations of this team.
    #[param(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
    #[schema(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
    team_id: Option<String>,
    /// Only conversations of this inbox.
    #[param(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
    #[schema(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
    inbox_id: Option<String>,
    /// Only conversations with this contact.
    contact_id: Option<Uuid>,
    /// Channels to include: `whatsapp`, `instagram`, `email`, `sms`, `chat`, `phone` (comma-separated).
    #[param(value_type = Option<Vec<Channel>>, style = Form, explode = false, max_items = 50)]
    channel: Option<OneOrMany>,
    /// Only one-to-one or only group conversations.
    group_type: Option<GroupType>,
    /// Only the conversations of this group chat.
    group_id: Option<Uuid>,
    /// Labels to match (comma-separated); see `label_match`.
    #[param(value_type = Option<Vec<LabelText>>, style = Form, explode = false, max_items = 50)]
    label: Option<OneOrMany>,
    /// `all` (default): every label must be present; `any`: at least one.
    #[param(value_type = Option<LabelMatchName>, inline)]
    #[schema(value_type = Option<LabelMatchName>, inline)]
    label_match: Option<String>,
    /// Only starred (or only unstarred) conversations.
    starred: Option<bool>,
    /// Only conversations whose customer is (or is not) waiting for a reply.
    awaiting_response: Option<bool>,
    /// Only conversations this user took part in.
    #[param(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
    #[schema(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
    participating: Option<String>,
    /// Only conversations in which this user was mentioned.
    #[param(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
    #[schema(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
    mentioned: Option<String>,
    /// Created at or after this time (RFC 3339).
    created_after: Option<Instant>,
    /// Created before this time (RFC 3339).
    created_before: Option<Instant>,
    /// Last active at or after this time (RFC 3339).
    last_activity_after: Option<Instant>,
    /// Last active before this time (RFC 3339).
    last_activity_before: Option<Instant>,
    /// Search the subject, the contact's name, e-mail and phone, and the last message (3 to 200
    /// characters, no control characters).
    #[param(min_length = 3, max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    #[schema(min_length = 3, max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    q: Option<String>,
    /// Only conversations standing against their SLA as one of: `breached` (a live timer is past
    /// due), `warning`, `active`, `paused` (comma-separated). A conversation counts by its worst
    /// live timer; one without a live timer matches none.
    #[param(value_type = Option<Vec<DueState>>, style = Form, explode = false, max_items = 50)]
    #[schema(value_type = Option<Vec<DueState>>)]
    sla_status: Option<OneOrMany>,
    /// `last_activity_at` (default), `created_at`, `priority`, `waiting_since` or `sla_due_at`
    /// (the next due of a running SLA timer, soonest and most overdue first; only conversations
    /// with one).
    #[param(value_type = Option<SortName>, inline)]
    #[schema(value_type = Option<SortName>, inline)]
    sort: Option<String>,
    /// `asc` or `desc` (each sort has its natural default).
    #[param(value_type = Option<OrderName>, inline)]
    #[schema(value_type = Option<OrderName>, inline)]
    order: Option<String>,
    /// Conversations per page, 1 to 100 (default 25). Lists only.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page. Lists only.
    cursor: Option<String>,
    /// Read-your-writes: wait until the read model reflects this global position.
    #[param(minimum = 0)]
    #[schema(minimum = 0)]
    min_position: Option<i64>,
    /// Bulk resolve only: the conversations to close, instead of the filters.
    #[param(ignore)]
    ids: Option<Vec<Uuid>>,
}

/// The values of `label_match` (a schema only: the list reads them as text).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum LabelMatchName {
    All,
    Any,
}

/// A label in a list's filter (a schema only): no comma, which separates them, and no control
/// character but a tab or line break.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(pattern = r"^[^,\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]{0,64}$")]
#[allow(dead_code)]
pub struct LabelText(String);

/// The values of `sort` (a schema only).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum SortName {
    LastActivityAt,
    CreatedAt,
    Priority,
    WaitingSince,
    SlaDueAt,
}

/// The values of `order` (a schema only).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum OrderName {
    Asc,
    Desc,
}

fn parse_each<T: for<'de> Deserialize<'de>>(
    field: &str,
    values: &Option<OneOrMany>,
    known: &str,
) -> Result<Vec<T>, ApiError> {
    let mut parsed = Vec::new();
    for value in OneOrMany::values(field, values)? {
        let item = serde_json::from_value(serde_json::Value::String(value.clone()))
            .map_err(|_| ApiError::invalid_field(field, format!("{value:?} is not one of {known}")))?;
        parsed.push(item);
    }
    Ok(parsed)
}

/// A filter that breaks a field rule: a malformed query (400), as every other bad parameter of
/// a read is, not a refused command (422).
fn bad_filter(error: colloquy_domain::validate::FieldError) -> ApiError {
    ApiError::invalid_field(&error.field, error.reason)
}

fn short_id(field: &str, value: &Option<String>) -> Result<Option<String>, ApiError> {
    value.as_deref().map(|v| colloquy_domain::validate::external_id(field, v).map_err(bad_filter)).transpose()
}

/// A time filter within RFC 3339's years 0000 to 9999. chrono parses years far beyond them,
/// which PostgreSQL's timestamps cannot hold (it would fail the query).
/// Shortest `q` accepted: shorter words match too much to be searched by index.
pub const MIN_QUERY_CHARS: usize = 3;
/// Longest `q` accepted.
pub const MAX_QUERY_CHARS: usize = 200;

impl InboxParams {
    /// The filter these parameters describe, checked.
    pub fn filter(&self) -> Result<ListFilter, ApiError> {
        let label_match = match self.label_match.as_deref() {
            None | Some("all") => LabelMatch::All,
            Some("any") => LabelMatch::Any,
            Some(other) => {
                return Err(ApiError::invalid_field(
                    "label_match",
                    format!("{other:?} is not one of all, any"),
                ))
            }
        };
        let mut labels = Vec::new();
        for label in OneOrMany::values("label", &self.label)? {
            labels.push(colloquy_domain::validate::label("label", &label).map_err(bad_filter)?);
        }
        // Counted as sent, as the schema states it; surrounding blanks are then dropped.
        let q = match self.q.as_deref() {
            None => None,
            Some(q) if q.chars().count() < MIN_QUERY_CHARS => {
                return Err(ApiError::invalid_field(
                    "q",
                    format!("must be at least {MIN_QUERY_CHARS} characters"),
                ))
            }
            Some(q) if q.chars().count() > MAX_QUERY_CHARS || q.chars().any(char::is_control) => {
                return Err(ApiError::invalid_field(
                    "q",
                    format!("must be at most {MAX_QUERY_CHARS} characters without control characters"),
                ))
            }
            Some(q) => Some(q.trim().to_owned()).filter(|q| !q.is_empty()),
        };
        Ok(ListFilter {
            statuses: parse_each::<Status>("status", &self.status, "open, pending, snoozed, closed, bot")?,
            priorities: parse_each::<Priority>("priority", &self.priority, "low, medium, high, urgent")?,
            assignee_id: short_id("assignee_id", &self.assignee_id)?,
            unassigned: self.unassigned == Some(true),
            team_id: short_id("team_id", &self.team_id)?,
            inbox_id: short_id("inbox_id", &self.inbox_id)?,
            contact_id: self.contact_id.map(|id| id.to_string()),
            channels: parse_each::<Channel>(
                "channel",
                &self.channel,
                "whatsapp, instagram, email, sms, chat, phone",
            )?,
            group_type: self.group_type,
            group_id: self.group_id.map(|id| id.to_string()),
            labels,
            label_match,
            starred: self.starred,
            awaiting_response: self.awaiting_response,
            participating: short_id("participating", &self.participating)?,
            mentioned: short_id("mentioned", &self.mentioned)?,
            created_after: self.created_after.map(Into::into),
            created_before: self.created_before.map(Into::into),
            last_activity_after: self.last_activity_after.map(Into::into),
            last_activity_before: self.last_activity_before.map(Into::into),
            q,
            sla_states: parse_each::<DueState>(
                "sla_status",
                &self.sla_status,
                "breached, warning, active, paused",
            )?,
        })
    }

    fn sort(&self) -> Result<Sort, ApiError> {
        let key = match self.sort.as_deref() {
            None => SortKey::default(),
            Some(name) => SortKey::parse(name).ok_or_else(|| {
                ApiError::invalid_field(
                    "sort",
                    format!(
                        "{name:?} is not one of last_activity_at, created_at, priority, waiting_since, sla_due_at"
                    ),
                )
            })?,
        };
        let direction = match self.order.as_deref() {
            None => key.default_direction(),
            Some(name) => Direction::parse(name).ok_or_else(|| {
                ApiError::invalid_field("order", format!("{name:?} is not one of asc, desc"))
            })?,
        };
        Ok(Sort { key, direction })
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => {
                Err(ApiError::invalid_field("limit", format!("must be 1 to {MAX_LIMIT} (the maximum)")))
            }
        }
    }

    fn refuse(&self, fields: &[(&str, bool)], why: &str) -> Result<(), ApiError> {
        match fields.iter().find(|(_, present)| *present) {
            Some((field, _)) => Err(ApiError::invalid_field(field, why.to_owned())),
            None => Ok(()),
        }
    }
}

/// `GET /v1/conversations`: a page of the tenant's conversations matching the filters.
#[utoipa::path(
    get,
    path = "/conversations",
    tag = "inbox",
    summary = "List conversations",
    description = "A page of the tenant's conversations matching the filters, from the inbox read model. \
        Pass the `Colloquy-Position` of a command as `min_position` to see its effect (waits up to 5 s, \
        then 503 with `Retry-After`; 503 at once when a quarter of the server's places in flight \
        already wait for a read model).",
    params(InboxParams),
    responses((status = 200, description = "A page of conversations.", body = Page<ConversationView>))
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(params): Query<InboxParams>,
) -> Result<axum::Json<Page<ConversationView>>, ApiError> {
    require(&principal, "conversations:read")?;
    params.refuse(&[("ids", params.ids.is_some())], "applies to POST /v1/conversations/resolve only")?;
    let filter = params.filter()?;
    let sort = params.sort()?;
    let limit = params.limit()?;
    // An empty `cursor=` is the first page, as in every other list.
    let after = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(text) => {
            let cursor = Cursor::decode(text)
                .ok_or_else(|| ApiError::invalid_field("cursor", "is not a cursor this list issued"))?;
            if cursor.sort != sort {
                return Err(ApiError::invalid_field(
                    "cursor",
                    "was issued for another sort; pass the same sort and order as the first page",
                ));
            }
            Some(cursor)
        }
    };
    state.await_projection(conversation_list::NAME, params.min_position).await?;
    let page = conversation_list::list(
        state.store(),
        principal.tenant.as_str(),
        &filter,
        sort,
        after.as_ref(),
        limit,
    )
    .await?;
    Ok(axum::Json(Page {
        data: page
            .rows
            .into_iter()
            .zip(page.sla)
            .map(|(row, due)| ConversationView::from_row(row).with_sla(due))
            .collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// Query of `GET /v1/conversations/counts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CountParams {
    /// The statuses `all`, `mine` and `unassigned` count (every status when absent;
    /// comma-separated).
    #[param(value_type = Option<Vec<Status>>, style = Form, explode = false, max_items = 50)]
    #[param(example = json!(["open", "pending"]))]
    status: Option<OneOrMany>,
    /// Whose conversations `mine` counts.
    #[param(pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")]
    user_id: Option<String>,
    /// Read-your-writes: wait until the counters reflect this global position.
    min_position: Option<i64>,
}

/// `GET /v1/conversations/counts`: per status, and all / mine / unassigned, from counters.
#[utoipa::path(
    get,
    path = "/conversations/counts",
    tag = "inbox",
    summary = "Count conversations",
    description = "Per status, and all / mine / unassigned within the statuses asked for.",
    params(CountParams),
    responses((status = 200, description = "The counts.", body = crate::openapi::CountsSchema))
)]
pub async fn counts(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(params): Query<CountParams>,
) -> Result<axum::Json<Counts>, ApiError> {
    require(&principal, "conversations:read")?;
    let statuses = parse_each::<Status>("status", &params.status, "open, pending, snoozed, closed, bot")?;
    let user = short_id("user_id", &params.user_id)?;
    state.await_projection(conversation_list::NAME, params.min_position).await?;
    let counts =
        conversation_list::counts(state.store(), principal.tenant.as_str(), &statuses, user.as_deref())
            .await?;
    Ok(axum::Json(counts))
}

/// One conversation a bulk resolve could not close.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Failure {
    id: String,
    reason: String,
}

/// Answer of `POST /v1/conversations/resolve`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Resolved {
    resolved: usize,
    failed: Vec<Failure>,
    /// More conversations matched than one request closes; send it again for the rest.
    truncated: bool,
}

/// `POST /v1/conversations/resolve`: closes the conversations named by `ids`, or every one
/// matching the filters (open, pending, snoozed and bot ones when no status is given), each by
/// its own command with its own events.
#[utoipa::path(
    post,
    path = "/conversations/resolve",
    tag = "inbox",
    summary = "Resolve conversations in bulk",
    description = "Closes the conversations named by `ids`, or every one matching the filters (open, pending, \
        snoozed and bot ones when no status is given; at most 5,000, else `truncated`), each by its own \
        command with its own events.",
    request_body = InboxParams,
    responses((status = 200, description = "How many were closed, and which could not be.", body = Resolved))
)]
pub async fn resolve(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Json(params): Json<InboxParams>,
) -> Result<axum::Json<Resolved>, ApiError> {
    require(&principal, "conversations:write")?;
    let why = "does not apply to a bulk resolve";
    params.refuse(
        &[
            ("sort", params.sort.is_some()),
            ("order", params.order.is_some()),
            ("limit", params.limit.is_some()),
            ("cursor", params.cursor.is_some()),
        ],
        why,
    )?;
    let mut filter = params.filter()?;
    let (ids, truncated) = match &params.ids {
        Some(ids) => {
            if filter != ListFilter::default() {
                return Err(ApiError::unacceptable_field("ids", "give either ids or filters, not both"));
            }
            if ids.len() > MAX_BULK {
                return Err(ApiError::invalid_field("ids", format!("at most {MAX_BULK} per request")));
            }
            let mut unique: Vec<String> = Vec::with_capacity(ids.len());
            for id in ids.iter().map(Uuid::to_string) {
                if !unique.contains(&id) {
                    unique.push(id);
                }
            }
            (unique, false)
        }
        None => {
            if filter == ListFilter::default() {
                return Err(ApiError::unacceptable_field(
                    "ids",
                    "give ids or at least one filter; resolving every conversation at once is not offered",
                ));
            }
            if filter.statuses.is_empty() {
                filter.statuses = vec![Status::Open, Status::Pending, Status::Snoozed, Status::Bot];
            }
            state.await_projection(conversation_list::NAME, params.min_position).await?;
            matching_ids(&state, &principal, &filter).await?
        }
    };
    let origin = origin(&principal, &headers)?;
    let outcomes: Vec<(String, Result<(), String>)> = stream::iter(ids)
        .map(|id| {
            let state = state.clone();
            let origin = origin.clone();
            async move {
                let command =
                    ConversationCommand::ChangeStatus { status: Status::Closed, snoozed_until: None };
                let outcome = state
                    .conversations()
                    .execute(&id, command, Intent::Update, None, &origin, |_, _| ())
                    .await
                    .map(|_| ())
                    .map_err(|e| command_failed(e, format!("conversation {id}")).detail().to_owned());
                (id, outcome)
            }
        })
        .buffer_unordered(BULK_CONCURRENCY)
        .collect()
        .await;
    let mut answer = Resolved { resolved: 0, failed: Vec::new(), truncated };
    for (id, outcome) in outcomes {
        match outcome {
            Ok(()) => answer.resolved += 1,
            Err(reason) => answer.failed.push(Failure { id, reason }),
        }
    }
    answer.failed.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(axum::Json(answer))
}

/// Ids of the tenant's conversations matching `filter`, up to [`MAX_BULK`]; true when more match.
async fn matching_ids(
    state: &AppState,
    principal: &Principal,
    filter: &ListFilter,
) -> Result<(Vec<String>, bool), ApiError> {
    let sort = Sort { key: SortKey::CreatedAt, direction: Direction::Asc };
    let mut ids = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let page = conversation_list::list(
            state.store(),
            principal.tenant.as_str(),
            filter,
            sort,
            after.as_ref(),
            MAX_LIMIT,
        )
        .await?;
        ids.extend(page.rows.into_iter().map(|row| row.id));
        if ids.len() > MAX_BULK {
            ids.truncate(MAX_BULK);
            return Ok((ids, true));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok((ids, false)),
        }
    }
}
