//! `GET /v1/audit` (`audit:read`): every command's effect as one entry (who, through which
//! token and request, on which aggregate, which events at which positions, when), read from the
//! tenant's log in order; filterable, cursor-paged, and exported whole as CSV or JSON Lines. The
//! entries take the shape of seed 004's `audit_logs` where it maps (`auditable_type`, `action`,
//! `username`, `request_uuid`, `audited_changes`).

use std::collections::{HashMap, VecDeque};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use colloquy_domain::TenantId;
use colloquy_infra::StoredEvent;

use crate::extract::{require, Auth, Query};
use crate::instant::Instant;
use crate::problem::ApiError;
use crate::routes::reports::{csv_line, csv_response, wants_csv};
use crate::state::AppState;
use crate::views::{event_data, Page};

/// The scope that reads the audit log.
const SCOPE: &str = "audit:read";
/// Entries per page when `limit` is absent.
const DEFAULT_LIMIT: usize = 50;
/// Most entries per page.
const MAX_LIMIT: usize = 500;
/// Most events one page scans for its filter: past it the page ends early, and `next_cursor`
/// goes on from where the scan stopped.
const SCAN_BUDGET: u64 = 20_000;
/// Events read from the log at a time.
const READ: i64 = 500;

/// Query of `GET /v1/audit`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only what this actor did (its id: a token's principal, a user, a process).
    #[param(pattern = r"^[^\x00-\x1f]{1,256}$")]
    pub actor: Option<String>,
    /// Only this aggregate type (`conversation`, `contact`, `group`, `calendar`, ...).
    #[param(pattern = r"^[a-z_]{1,64}$")]
    pub aggregate_type: Option<String>,
    /// Only this aggregate.
    #[param(pattern = r"^[^\x00-\x1f]{1,256}$")]
    pub aggregate_id: Option<String>,
    /// Only entries with an event of this type (`StatusChanged`).
    #[param(pattern = r"^[A-Za-z]{1,64}$")]
    pub event_type: Option<String>,
    /// Only entries recorded at or after this time.
    pub since: Option<Instant>,
    /// Only entries recorded before this time.
    pub until: Option<Instant>,
    /// The `next_cursor` of the previous page (empty: from the start).
    pub cursor: Option<String>,
    /// Entries per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// One event of an entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditedChange {
    /// Its type.
    event_type: String,
    /// Its global position.
    position: i64,
    /// Its fields.
    data: Value,
}

/// One command's effect.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// The id of its first event.
    id: Uuid,
    /// When it was recorded.
    created_at: DateTime<Utc>,
    /// The aggregate's type.
    auditable_type: String,
    /// The aggregate's id.
    auditable_id: String,
    /// `create` (its stream's first events), `destroy` (a deletion) or `update`.
    action: &'static str,
    /// `account`: what the entry belongs to.
    associated_type: &'static str,
    /// The tenant.
    associated_id: String,
    /// The kind of principal that acted.
    user_type: String,
    /// The principal's id.
    username: String,
    /// The token that carried the command, when it acted on behalf of `username`.
    via_token: Option<String>,
    /// The request that carried it.
    request_uuid: Option<String>,
    /// Groups everything one original request caused.
    correlation_id: Option<String>,
    /// What caused it, for what a process did.
    causation_id: Option<String>,
    /// The aggregate's version after it.
    version: i64,
    /// Its events' types.
    event_types: Vec<String>,
    /// Its first event's global position.
    from_position: i64,
    /// Its last event's global position.
    to_position: i64,
    /// Its events.
    audited_changes: Vec<AuditedChange>,
}

type Key = (String, String, Option<String>, Option<String>, Option<String>, Option<String>);

fn metadata(event: &StoredEvent) -> HashMap<String, String> {
    event.metadata.parse::<HashMap<String, String>>().unwrap_or_default()
}

fn key_of(event: &StoredEvent, meta: &HashMap<String, String>) -> Key {
    let get = |name: &str| meta.get(name).cloned();
    (
        event.aggregate_type.clone(),
        event.aggregate_id.clone(),
        get("correlation_id"),
        get("request_id"),
        get("actor_id"),
        get("recorded_at"),
    )
}

fn entry_of(events: Vec<(StoredEvent, HashMap<String, String>)>) -> Option<AuditEntry> {
    let (first, meta) = events.first()?;
    let (last, _) = events.last()?;
    let get = |name: &str| meta.get(name).cloned();
    let event_types: Vec<String> = events.iter().map(|(e, _)| e.event_type.clone()).collect();
    let action = if event_types.iter().any(|t| t.ends_with("Deleted")) {
        "destroy"
    } else if first.sequence == 1 {
        "create"
    } else {
        "update"
    };
    Some(AuditEntry {
        id: get("event_id").and_then(|id| Uuid::parse_str(&id).ok()).unwrap_or_default(),
        created_at: first.recorded_at().unwrap_or_default(),
        auditable_type: first.aggregate_type.clone(),
        auditable_id: first.aggregate_id.clone(),
        action,
        associated_type: "account",
        associated_id: get("tenant_id").unwrap_or_default(),
        user_type: get("actor_kind").unwrap_or_default(),
        username: get("actor_id").unwrap_or_default(),
        via_token: get("via_token"),
        request_uuid: get("request_id"),
        correlation_id: get("correlation_id"),
        causation_id: get("causation_id"),
        version: last.sequence,
        from_position: first.position.unwrap_or_default(),
        to_position: last.position.unwrap_or_default(),
        audited_changes: events
            .iter()
            .map(|(event, _)| AuditedChange {
                event_type: event.event_type.clone(),
                position: event.position.unwrap_or_default(),
                data: event_data(event),
            })
            .collect(),
        event_types,
    })
}

/// Reads a tenant's log as entries, in order: a command's events are adjacent in the log (one
/// commit), and share its aggregate, request, correlation, actor and time.
struct Entries {
    state: AppState,
    tenant: TenantId,
    after: i64,
    buffer: VecDeque<(StoredEvent, HashMap<String, String>)>,
    ended: bool,
    scanned: u64,
}

impl Entries {
    fn new(state: AppState, tenant: TenantId, after: i64) -> Self {
        Self { state, tenant, after, buffer: VecDeque::new(), ended: false, scanned: 0 }
    }

    async fn fill(&mut self) -> Result<(), ApiError> {
        if self.buffer.len() > 1 || self.ended {
            return Ok(());
        }
        let page = self.state.log().read(self.after, READ, Some(&self.tenant)).await?;
        match page.last().and_then(|e| e.position) {
            None => self.ended = true,
            Some(last) => {
                self.after = last;
                self.buffer.extend(page.into_iter().map(|event| {
                    let meta = metadata(&event);
                    (event, meta)
                }));
            }
        }
        Ok(())
    }

    /// The next entry; none at the log's end.
    async fn next(&mut self) -> Result<Option<AuditEntry>, ApiError> {
        self.fill().await?;
        let Some(first) = self.buffer.pop_front() else { return Ok(None) };
        let key = key_of(&first.0, &first.1);
        let mut events = vec![first];
        loop {
            self.fill().await?;
            match self.buffer.front() {
                Some((event, meta)) if key_of(event, meta) == key => {
                    events.extend(self.buffer.pop_front());
                }
                _ => break,
            }
        }
        self.scanned += events.len() as u64;
        Ok(entry_of(events))
    }
}

/// The query's filter, checked.
struct Filter {
    actor: Option<String>,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    event_type: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Filter {
    fn keeps(&self, entry: &AuditEntry) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == entry.username)
            && self.aggregate_type.as_ref().is_none_or(|t| *t == entry.auditable_type)
            && self.aggregate_id.as_ref().is_none_or(|i| *i == entry.auditable_id)
            && self.event_type.as_ref().is_none_or(|t| entry.event_types.contains(t))
            && self.since.is_none_or(|since| entry.created_at >= since)
            && self.until.is_none_or(|until| entry.created_at < until)
    }
}

fn cursor_of(position: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("audit:{position}"))
}

fn parse_cursor(cursor: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::invalid_field("cursor", "is not a cursor this list issued");
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    text.strip_prefix("audit:").and_then(|p| p.parse::<i64>().ok()).filter(|p| *p >= 0).ok_or_else(bad)
}

/// How the client asked for the whole log: JSON Lines, CSV, or a JSON page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Page,
    Csv,
    Lines,
}

fn format_of(headers: &HeaderMap) -> Format {
    let lines = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|m| {
            let m = m.split(';').next().unwrap_or_default().trim();
            m.eq_ignore_ascii_case("application/x-ndjson") || m.eq_ignore_ascii_case("application/jsonl")
        })
    });
    if lines {
        Format::Lines
    } else if wants_csv(headers) {
        Format::Csv
    } else {
        Format::Page
    }
}

const CSV_HEADER: [&str; 15] = [
    "id",
    "created_at",
    "auditable_type",
    "auditable_id",
    "action",
    "user_type",
    "username",
    "via_token",
    "request_uuid",
    "correlation_id",
    "causation_id",
    "version",
    "from_position",
    "to_position",
    "event_types",
];

fn csv_record(entry: &AuditEntry) -> Vec<u8> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    csv_line(&[
        entry.id.to_string(),
        entry.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        entry.auditable_type.clone(),
        entry.auditable_id.clone(),
        entry.action.to_owned(),
        entry.user_type.clone(),
        entry.username.clone(),
        text(&entry.via_token),
        text(&entry.request_uuid),
        text(&entry.correlation_id),
        text(&entry.causation_id),
        entry.version.to_string(),
        entry.from_position.to_string(),
        entry.to_position.to_string(),
        entry.event_types.join(";"),
    ])
}

/// Streams every entry the filter keeps, from `after`, as CSV or JSON Lines.
fn export(state: AppState, tenant: TenantId, after: i64, filter: Filter, format: Format) -> Response {
    let (lines, lines_in) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::spawn(async move {
        if format == Format::Csv && lines.send(Ok(csv_line(&CSV_HEADER))).await.is_err() {
            return;
        }
        let mut entries = Entries::new(state, tenant, after);
        loop {
            let entry = match entries.next().await {
                Ok(Some(entry)) => entry,
                Ok(None) => return,
                Err(_) => {
                    // Ends the body with an error: a broken transfer, not a short file.
                    let _ = lines.send(Err(std::io::Error::other("the log could not be read"))).await;
                    return;
                }
            };
            if !filter.keeps(&entry) {
                continue;
            }
            let line = match format {
                Format::Csv => csv_record(&entry),
                _ => {
                    let mut line = serde_json::to_vec(&entry).unwrap_or_default();
                    line.push(b'\n');
                    line
                }
            };
            if lines.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(lines_in, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let body = axum::body::Body::from_stream(stream);
    if format == Format::Csv {
        return csv_response(body, "audit");
    }
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    response
}

/// `GET /v1/audit`
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    summary = "List the audit log",
    description = "Every command's effect, one entry each, in log order: who acted (and through which token and request), on \
        which aggregate, its events with their positions and fields, when. A page scans at most 20,000 events for its \
        filter, so it can hold fewer entries than `limit` and still have a `next_cursor`. `Accept: text/csv` or \
        `application/x-ndjson` streams every matching entry instead.",
    params(AuditQuery),
    responses((status = 200, description = "A page of entries (or every one, as CSV or JSON Lines).",
        content((Page<AuditEntry> = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))))
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    require(&principal, SCOPE)?;
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return Err(ApiError::invalid_field("limit", format!("must be 1 to {MAX_LIMIT}"))),
    };
    let after = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(cursor) => parse_cursor(cursor)?,
        None => 0,
    };
    let filter = Filter {
        actor: query.actor,
        aggregate_type: query.aggregate_type,
        aggregate_id: query.aggregate_id,
        event_type: query.event_type,
        since: query.since.map(Into::into),
        until: query.until.map(Into::into),
    };
    let format = format_of(&headers);
    if format != Format::Page {
        return Ok(export(state, principal.tenant.clone(), after, filter, format));
    }
    let mut entries = Entries::new(state.clone(), principal.tenant.clone(), after);
    let mut data = Vec::new();
    let mut reached = after;
    let mut more = false;
    while let Some(entry) = entries.next().await? {
        reached = entry.to_position;
        if filter.keeps(&entry) {
            data.push(entry);
        }
        if data.len() == limit || entries.scanned >= SCAN_BUDGET {
            // More may follow: the next page starts after this entry.
            more = true;
            break;
        }
    }
    let next_cursor = more.then(|| cursor_of(reached));
    Ok(axum::Json(Page { data, next_cursor }).into_response())
}
