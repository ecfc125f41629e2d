//! `/v1/calendars`: business calendars (a time zone, hours per weekday, dated exceptions, the
//! inboxes they serve), versioned; and the import of holidays from an iCalendar file.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use colloquy_domain::calendar::Calendar;
use colloquy_domain::hours::{import_ical, DatedHours, SkippedEvent};

use crate::extract::{require, Auth, IfMatch, Json, Path};
use crate::problem::ApiError;
use crate::routes::definitions::{self, DefinitionView, RevisionView};
use crate::routes::Versioned;
use crate::state::AppState;
use crate::views::Page;

/// Body of `POST /v1/calendars`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "Support, Berlin", "time_zone": "Europe/Berlin",
    "weekly": [{"weekday": "Mon", "start": "09:00", "end": "17:00"}, {"weekday": "Tue", "start": "09:00", "end": "17:00"}],
    "exceptions": [{"date": "2026-12-24", "intervals": [{"start": "09:00", "end": "12:00"}], "name": "Christmas Eve"}],
    "inbox_ids": ["support"], "tenant_default": true}))]
pub struct CreateCalendar {
    /// Optional client-chosen id (a UUID); a v7 UUID is generated when absent.
    id: Option<Uuid>,
    #[serde(flatten)]
    calendar: Calendar,
}

/// `POST /v1/calendars`
#[utoipa::path(
    post,
    path = "/calendars",
    tag = "calendars",
    summary = "Create a business calendar",
    description = "Intervals belong to the local date they start on; one whose end is not after its start runs past midnight. An exception replaces its date's weekly hours (no intervals: closed).",
    request_body = CreateCalendar,
    responses(
        (status = 201, description = "Created, as version 1; `Location` names it.", body = DefinitionView<Calendar>),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Json(body): Json<CreateCalendar>,
) -> Result<Versioned<DefinitionView<Calendar>>, ApiError> {
    definitions::create(state.calendars(), &principal, &headers, "calendars", body.id, body.calendar).await
}

/// `GET /v1/calendars`
#[utoipa::path(
    get,
    path = "/calendars",
    tag = "calendars",
    summary = "List business calendars",
    responses((status = 200, description = "The tenant's calendars, oldest first.", body = Page<DefinitionView<Calendar>>))
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<axum::Json<Page<DefinitionView<Calendar>>>, ApiError> {
    definitions::list(&state, &principal).await
}

/// `GET /v1/calendars/{id}`
#[utoipa::path(
    get,
    path = "/calendars/{id}",
    tag = "calendars",
    summary = "Read a business calendar",
    params(("id" = Uuid, Path, description = "The calendar's id.")),
    responses((status = 200, description = "Its current version; `ETag` is its stream's version.", body = DefinitionView<Calendar>))
)]
pub async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
) -> Result<Versioned<DefinitionView<Calendar>>, ApiError> {
    definitions::get(state.calendars(), &principal, id).await
}

/// `PUT /v1/calendars/{id}`
#[utoipa::path(
    put,
    path = "/calendars/{id}",
    tag = "calendars",
    summary = "Replace a business calendar",
    description = "Records the body as the next version. Running SLA timers compute their next times with it.",
    params(("id" = Uuid, Path, description = "The calendar's id.")),
    request_body = Calendar,
    responses(
        (status = 200, description = "Its new current version.", body = DefinitionView<Calendar>),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn replace(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(id): Path<Uuid>,
    Json(calendar): Json<Calendar>,
) -> Result<Versioned<DefinitionView<Calendar>>, ApiError> {
    definitions::replace(state.calendars(), &principal, &headers, (id, expected), calendar).await
}

/// `DELETE /v1/calendars/{id}`
#[utoipa::path(
    delete,
    path = "/calendars/{id}",
    tag = "calendars",
    summary = "Delete a business calendar",
    params(("id" = Uuid, Path, description = "The calendar's id.")),
    responses(
        (status = 204, description = "Deleted; its versions stay readable."),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    definitions::delete(state.calendars(), &principal, &headers, (id, expected)).await
}

/// `GET /v1/calendars/{id}/versions`
#[utoipa::path(
    get,
    path = "/calendars/{id}/versions",
    tag = "calendars",
    summary = "Read every version of a business calendar",
    params(("id" = Uuid, Path, description = "The calendar's id.")),
    responses((status = 200, description = "Every version, oldest first.", body = Page<RevisionView<Calendar>>))
)]
pub async fn versions(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Page<RevisionView<Calendar>>>, ApiError> {
    definitions::versions(state.calendars(), &principal, id).await
}

/// Body of `POST /v1/calendars/{id}/holidays`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"ics": "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:xmas-2026\r\nDTSTART;VALUE=DATE:20261225\r\nSUMMARY:Christmas Day\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"}))]
#[serde(deny_unknown_fields)]
pub struct ImportHolidays {
    /// An iCalendar file (RFC 5545), at most 1 MiB: its all-day events become closed days.
    ics: String,
}

/// What an import did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HolidaysImported {
    /// The calendar's new current version.
    calendar: DefinitionView<Calendar>,
    /// The closed days taken from the file (a date already listed is replaced).
    imported: Vec<DatedHours>,
    /// The events left out, and why (timed, recurring or cancelled events).
    skipped: Vec<SkippedEvent>,
}

/// `POST /v1/calendars/{id}/holidays`
#[utoipa::path(
    post,
    path = "/calendars/{id}/holidays",
    tag = "calendars",
    summary = "Import holidays from an iCalendar file",
    description = "Each all-day event closes its days; the calendar's exception on such a date is replaced. Timed, recurring and cancelled events are reported as skipped. Records a new version.",
    params(("id" = Uuid, Path, description = "The calendar's id.")),
    request_body = ImportHolidays,
    responses(
        (status = 200, description = "The new version, what was imported and what was skipped.", body = HolidaysImported),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn import_holidays(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(id): Path<Uuid>,
    Json(body): Json<ImportHolidays>,
) -> Result<Versioned<HolidaysImported>, ApiError> {
    require(&principal, "settings:write")?;
    let import = import_ical(&body.ics).map_err(|error| {
        ApiError::invalid(colloquy_domain::validate::FieldError::new("ics", error.to_string()))
    })?;
    let current = definitions::get(state.calendars(), &principal, id).await?;
    if expected.is_some_and(|expected| expected != current.version) {
        return Err(ApiError::precondition_failed(format!(
            "If-Match names version {}, but the current version is {}; fetch it again and retry",
            expected.unwrap_or_default(),
            current.version
        )));
    }
    let mut calendar = current.body.definition;
    calendar.hours.exceptions.retain(|kept| import.exceptions.iter().all(|new| new.date != kept.date));
    calendar.hours.exceptions.extend(import.exceptions.iter().cloned());
    calendar.hours.exceptions.sort_by_key(|exception| exception.date);
    let replaced =
        definitions::replace(state.calendars(), &principal, &headers, (id, Some(current.version)), calendar)
            .await?;
    let body =
        HolidaysImported { calendar: replaced.body, imported: import.exceptions, skipped: import.skipped };
    Ok(Versioned::ok(replaced.version, body).at(replaced.position))
}
