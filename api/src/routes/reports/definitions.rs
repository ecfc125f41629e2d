//! The reports' definition versions: which are kept and how far each is built
//! (`GET /v1/reports/definitions`), two compared over a period (`GET /v1/reports/compare`), and
//! one made the tenant's current (`PUT /v1/reports/definitions/current`, an event on the tenant's
//! report settings). A new version builds from position 0 beside the others; nobody reads it by
//! default until a tenant makes it current (docs/adr/0009).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;

use colloquy_domain::definition::DefinitionCommand;
use colloquy_domain::report::{Metric, ReportSettings, DEFINITION, ESTABLISHED, SETTINGS_ID};
use colloquy_domain::validate::FieldError;
use colloquy_domain::TenantId;
use colloquy_infra::Intent;
use colloquy_projections::reports::{self, Reports};
use colloquy_projections::Projection;

use super::figures::{csv_table, figure_of, fold, About, FigureView};
use super::{report_query, wants_csv, SCOPE};
use crate::extract::{require, Auth, IfMatch, Json, Query};
use crate::problem::ApiError;
use crate::routes::{command, Ask};
use crate::state::AppState;

/// Who may make a version current: the tenant's settings.
const WRITE_SCOPE: &str = "settings:write";

/// The version `tenant`'s reports read by default: the one it made current, else the established
/// one (and the established one if its choice is no longer kept).
pub async fn current(state: &AppState, tenant: &TenantId) -> Result<u32, ApiError> {
    let chosen = chosen(state, tenant).await?.map(|(version, _)| version);
    Ok(chosen.filter(|version| Reports::of(*version).is_some()).unwrap_or(ESTABLISHED))
}

/// The version `tenant` made current and its settings' stream version, if it chose one.
async fn chosen(state: &AppState, tenant: &TenantId) -> Result<Option<(u32, usize)>, ApiError> {
    let read = state
        .report_settings()
        .read(tenant, &SETTINGS_ID.to_string(), |settings, version| {
            settings.current().map(|revision| (revision.definition.current_version, version))
        })
        .await?;
    Ok(read.flatten())
}

/// One kept definition version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DefinitionVersion {
    /// Its number.
    version: u32,
    /// Its projection (`colloquy projections rebuild <name>` rebuilds it).
    projection: &'static str,
    /// The global position its facts are built to.
    applied_position: i64,
    /// Whether its facts have reached the log's head as this answer was made.
    caught_up: bool,
    /// The tenant's reports read it by default.
    current: bool,
    /// The metrics it derives.
    metrics: Vec<Metric>,
}

/// `GET /v1/reports/definitions`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Definitions {
    /// The version the tenant's reports read by default.
    current_version: u32,
    /// Whether the tenant chose it (else it is the established default).
    chosen: bool,
    /// The log's head as this answer was made.
    log_position: i64,
    /// Every kept version, oldest first.
    versions: Vec<DefinitionVersion>,
}

/// Each kept version's projection and the position it has applied.
fn kept(state: &AppState) -> impl Iterator<Item = (Reports, i64)> + '_ {
    Reports::all().map(|reports| {
        let applied =
            state.projectors().iter().find(|p| p.name() == reports.name()).map_or(0, |p| p.applied());
        (reports, applied)
    })
}

async fn definitions(state: &AppState, tenant: &TenantId) -> Result<(Definitions, Option<usize>), ApiError> {
    let chosen = chosen(state, tenant).await?;
    let current = current(state, tenant).await?;
    let head = colloquy_infra::log::read_head(state.store()).await?;
    let versions = kept(state)
        .map(|(reports, applied)| DefinitionVersion {
            version: reports.version(),
            projection: reports.name(),
            applied_position: applied,
            caught_up: applied >= head,
            current: reports.version() == current,
            metrics: Metric::ALL.into_iter().filter(|m| m.derived_in(reports.version())).collect(),
        })
        .collect();
    let answer =
        Definitions { current_version: current, chosen: chosen.is_some(), log_position: head, versions };
    Ok((answer, chosen.map(|(_, stream_version)| stream_version)))
}

/// `GET /v1/reports/definitions`
#[utoipa::path(
    get,
    path = "/reports/definitions",
    tag = "reports",
    summary = "List the metric definition versions",
    description = "Every kept version, how far its facts are built, the metrics it derives, and which one the tenant's reports read \
        by default. `ETag` is the tenant's report settings' version (absent before it first chose one).",
    responses((status = 200, description = "The versions.", body = Definitions))
)]
pub async fn list(State(state): State<AppState>, Auth(principal): Auth) -> Result<Response, ApiError> {
    require(&principal, SCOPE)?;
    let (answer, stream_version) = definitions(&state, &principal.tenant).await?;
    Ok(answer_with_etag(answer, stream_version))
}

fn answer_with_etag(answer: Definitions, stream_version: Option<usize>) -> Response {
    use axum::response::IntoResponse;
    let mut response = axum::Json(answer).into_response();
    if let Some(version) = stream_version {
        if let Ok(value) = crate::extract::etag(version).parse() {
            response.headers_mut().insert(axum::http::header::ETAG, value);
        }
    }
    response
}

/// `PUT /v1/reports/definitions/current`
#[utoipa::path(
    put,
    path = "/reports/definitions/current",
    tag = "reports",
    summary = "Make a metric definition version current",
    description = "Records, as an event on the tenant's report settings (`ReportSettingsCreated`, then `ReportSettingsRevised`), \
        that its reports read `current_version` by default. The version's facts must have caught up with the log (its projection \
        rebuilt from position 0): compare it first. `If-Match` takes the settings' `ETag`. Earlier versions stay readable with `?version=`.",
    request_body = ReportSettings,
    security(("bearer" = ["settings:write"])),
    responses(
        (status = 200, description = "The versions, with the new current one.", body = Definitions),
        (status = 409, response = crate::openapi::Conflict),
        (status = 412, response = crate::openapi::PreconditionFailed),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn make_current(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Json(settings): Json<ReportSettings>,
) -> Result<Response, ApiError> {
    require(&principal, WRITE_SCOPE)?;
    let version = settings.current_version;
    let Some(reports) = Reports::of(version) else {
        let kept: Vec<String> = reports::VERSIONS.iter().map(|(v, _)| v.to_string()).collect();
        let reason = format!("{version} is not a kept definition version (kept: {})", kept.join(", "));
        return Err(ApiError::invalid(FieldError::new("current_version", reason)));
    };
    built(&state, reports).await?;
    let exists = chosen(&state, &principal.tenant).await?.is_some();
    let (intent, command_) = if exists {
        (Intent::Update, DefinitionCommand::Revise { definition: settings })
    } else {
        let tenant_id = principal.tenant.clone();
        (Intent::Create, DefinitionCommand::Create { id: SETTINGS_ID, tenant_id, definition: settings })
    };
    let ask = Ask {
        scope: WRITE_SCOPE,
        kind: "report settings",
        id: SETTINGS_ID,
        intent,
        expected,
        command: command_,
    };
    let committed = command(state.report_settings(), &principal, &headers, ask, |_, _| ()).await?;
    let (answer, stream_version) = definitions(&state, &principal.tenant).await?;
    let mut response = answer_with_etag(answer, stream_version.or(Some(committed.version)));
    if let Some(position) = committed.position {
        response.headers_mut().insert(crate::routes::POSITION_HEADER, position.into());
    }
    Ok(response)
}

/// Refuses (409) a version whose facts have not reached the log's head, after waiting as a
/// `min_position` read would for one that is only a little behind.
async fn built(state: &AppState, reports: Reports) -> Result<(), ApiError> {
    let head = colloquy_infra::log::read_head(state.store()).await?;
    let projector = state.projectors().iter().find(|p| p.name() == reports.name());
    let Some(projector) = projector else {
        return Err(ApiError::internal(&format!("no projector {}", reports.name())));
    };
    let reached = projector
        .wait_for(head, state.min_position_timeout())
        .await
        .map_err(|error| ApiError::internal(&error))?;
    if reached {
        return Ok(());
    }
    Err(ApiError::conflict(format!(
        "definition version {} is still being built: its facts are at position {} of the log's {head}; \
         compare it with GET /v1/reports/compare once it has caught up",
        reports.version(),
        projector.applied()
    )))
}

report_query! {
    /// Query of `GET /v1/reports/compare`: `version` (default: the newest) against `against`
    /// (default: the tenant's current one).
    CompareQuery {
        /// The version to compare with (default: the tenant's current one).
        #[param(minimum = 1)]
        against: Option<u32>,
    }
}

/// One metric under both versions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompareLine {
    /// The metric.
    metric: Metric,
    /// Under `version`.
    figure: FigureView,
    /// Under `against`.
    against: FigureView,
    /// Whether the two differ in a count or a duration.
    differs: bool,
}

/// `GET /v1/reports/compare`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Comparison {
    /// The version compared, its position and the period.
    #[serde(flatten)]
    about: About,
    /// The version compared with.
    against_version: u32,
    /// The position its figures are as of.
    against_as_of_position: i64,
    /// Every metric either version derives.
    metrics: Vec<CompareLine>,
}

/// `GET /v1/reports/compare`
#[utoipa::path(
    get,
    path = "/reports/compare",
    tag = "reports",
    summary = "Compare two metric definition versions",
    description = "Every metric over the period under `version` (default: the newest) beside `against` (default: the tenant's \
        current one), from each version's own facts, with whether they differ: what making a version current would change. \
        Each figure links to its facts.",
    params(CompareQuery),
    responses(
        (status = 200, description = "The comparison.", content((Comparison = "application/json"), (String = "text/csv"))),
        (status = 404, response = crate::openapi::NotFound)
    )
)]
pub async fn compare(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Query(query): Query<CompareQuery>,
) -> Result<Response, ApiError> {
    require(&principal, SCOPE)?;
    let mut scope = query.scope(&state, &principal.tenant).await?;
    if query.version.is_none() {
        scope.version = DEFINITION;
        scope.reports =
            Reports::of(DEFINITION).ok_or_else(|| ApiError::internal(&"the newest version is kept"))?;
    }
    let against = match query.against {
        Some(version) => version,
        None => current(&state, &principal.tenant).await?,
    };
    let against = Reports::of(against)
        .ok_or_else(|| ApiError::not_found(format!("metric definition version {against} (against)")))?;
    let as_of = scope.as_of(&state, query.min_position).await?;
    let other = super::Scope { reports: against, version: against.version(), ..scope.clone() };
    let against_as_of = other.as_of(&state, query.min_position).await?;
    let tenant = &principal.tenant;
    let mut mine = fold(&state, tenant, scope.version, &scope.filter, |row| vec![row.metric]).await?;
    let mut theirs = fold(&state, tenant, other.version, &other.filter, |row| vec![row.metric]).await?;
    let lines: Vec<CompareLine> = Metric::ALL
        .into_iter()
        .filter(|m| m.derived_in(scope.version) || m.derived_in(other.version))
        .map(|metric| {
            let figure = figure_of(mine.remove(&metric), scope.version, &scope.filter, metric);
            let against = figure_of(theirs.remove(&metric), other.version, &other.filter, metric);
            CompareLine { metric, differs: !figure.same_as(&against), figure, against }
        })
        .collect();
    if wants_csv(&headers) {
        let mut rows = Vec::new();
        for line in &lines {
            rows.push((vec![line.metric.as_str().to_owned(), scope.version.to_string()], &line.figure));
            rows.push((vec![line.metric.as_str().to_owned(), other.version.to_string()], &line.against));
        }
        return Ok(csv_table("compare", &["metric", "version"], rows));
    }
    let about = About::of(&scope, as_of, scope.until);
    let answer = Comparison {
        about,
        against_version: other.version,
        against_as_of_position: against_as_of,
        metrics: lines,
    };
    Ok(axum::response::IntoResponse::into_response(axum::Json(answer)))
}
