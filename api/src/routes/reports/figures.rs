//! The reports' figures, each folded from the facts of its period by the same [`Tally`]: the
//! summary beside the previous period, a metric's time series, breakdowns by agent, team, inbox,
//! channel, label or priority, the first-response-time distribution, the inbox by label matrix
//! and the live counts. `Accept: text/csv` answers each as CSV.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use colloquy_domain::conversation::Status;
use colloquy_domain::report::Metric;
use colloquy_domain::TenantId;
use colloquy_projections::conversation_list;
use colloquy_projections::reports::conversations::{ConversationRow, ConversationRows};
use colloquy_projections::reports::figures::{self, Bucket, Dimension, Durations, Figure, Tally};
use colloquy_projections::reports::query::{self, FactRow, Filter};
use colloquy_projections::reports::{cells, rollups};

use super::{csv_line, csv_response, facts_link, metrics, report_query, wants_csv, Scope, SCOPE};
use crate::extract::{require, Auth, Path, Query};
use crate::problem::ApiError;
use crate::state::AppState;

/// Most buckets one time series answers.
pub const MAX_BUCKETS: usize = 1000;

/// How many of a time series' buckets are read from the rollups at once.
const BUCKETS_AT_ONCE: usize = 8;

/// Feeds every fact `filter` selects to `each`, as the store reads them (memory stays flat).
async fn each_fact(
    state: &AppState,
    tenant: &TenantId,
    version: u32,
    filter: &Filter,
    mut each: impl FnMut(&FactRow),
) -> Result<(), ApiError> {
    let (rows, mut rows_in) = tokio::sync::mpsc::channel::<FactRow>(1024);
    let reading = query::each(state.store(), tenant, version, filter, rows);
    let folding = async {
        while let Some(row) = rows_in.recv().await {
            each(&row);
        }
    };
    let (read, ()) = tokio::join!(reading, folding);
    Ok(read?)
}

/// Folds every fact `filter` selects into a tally per key `key_of` gives it (none: left out).
pub(super) async fn fold<K: Ord>(
    state: &AppState,
    tenant: &TenantId,
    version: u32,
    filter: &Filter,
    key_of: impl Fn(&FactRow) -> Vec<K>,
) -> Result<BTreeMap<K, Tally>, ApiError> {
    let mut tallies: BTreeMap<K, Tally> = BTreeMap::new();
    each_fact(state, tenant, version, filter, |row| {
        for key in key_of(row) {
            tallies.entry(key).or_default().add(row);
        }
    })
    .await?;
    Ok(tallies)
}

/// A duration's statistics, in seconds (median and p90 nearest-rank).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DurationsView {
    /// Their sum.
    sum: i64,
    /// Their mean.
    mean: f64,
    /// Their median.
    median: i64,
    /// Their 90th percentile.
    p90: i64,
    /// Whether median and p90 are estimates, within 1% of a value at their rank (read from the
    /// rollups' histograms, once a figure holds more than 4,096 distinct durations): `false`,
    /// they are values at their rank. `?exact=true` folds the facts instead.
    estimated: bool,
}

impl From<Durations> for DurationsView {
    fn from(d: Durations) -> Self {
        Self { sum: d.sum, mean: d.mean, median: d.median, p90: d.p90, estimated: d.estimated }
    }
}

/// What a set of facts amounts to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FigureView {
    /// Facts (their counts add up across buckets and rows).
    count: u64,
    /// Distinct conversations among them.
    conversations: u64,
    /// Distinct contacts among them.
    contacts: u64,
    /// Durations in wall-clock seconds; `null` for a count metric or no facts.
    calendar: Option<DurationsView>,
    /// Durations in the inbox's business seconds.
    business: Option<DurationsView>,
    /// The facts behind it.
    facts: String,
}

impl FigureView {
    /// The same counts and durations (the links aside).
    pub(super) fn same_as(&self, other: &Self) -> bool {
        let durations = |d: &Option<DurationsView>| d.as_ref().map(|d| (d.sum, d.median, d.p90));
        (self.count, self.conversations, self.contacts) == (other.count, other.conversations, other.contacts)
            && durations(&self.calendar) == durations(&other.calendar)
            && durations(&self.business) == durations(&other.business)
    }
}

fn view(figure: Figure, link: String) -> FigureView {
    FigureView {
        count: figure.count,
        conversations: figure.conversations,
        contacts: figure.contacts,
        calendar: figure.calendar.map(Into::into),
        business: figure.business.map(Into::into),
        facts: link,
    }
}

fn empty() -> Figure {
    Tally::default().figure()
}

/// The figure of `tally` (or of no facts) for `metric` over `filter`.
pub(super) fn figure_of(tally: Option<Tally>, version: u32, filter: &Filter, metric: Metric) -> FigureView {
    from_figure(tally.map(Tally::figure), version, filter, metric)
}

/// The view of `figure` (or of no facts) for `metric` over `filter`.
fn from_figure(figure: Option<Figure>, version: u32, filter: &Filter, metric: Metric) -> FigureView {
    let filter = Filter { metrics: vec![metric], ..filter.clone() };
    view(figure.unwrap_or_else(empty), facts_link(version, &filter))
}

/// Whether a report over `filter` reads the rollups: unless `exact` asks to fold the facts, where
/// they serve it ([`rollups::serves`]).
fn from_rollups(filter: &Filter, exact: Option<bool>) -> bool {
    exact != Some(true) && rollups::serves(filter)
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn figure_csv(figure: &FigureView) -> Vec<String> {
    let durations = |d: &Option<DurationsView>| match d {
        Some(d) => vec![d.sum.to_string(), format!("{:.3}", d.mean), d.median.to_string(), d.p90.to_string()],
        None => vec![String::new(); 4],
    };
    let mut fields =
        vec![figure.count.to_string(), figure.conversations.to_string(), figure.contacts.to_string()];
    fields.extend(durations(&figure.calendar));
    fields.extend(durations(&figure.business));
    fields
}

const FIGURE_CSV_HEADER: [&str; 11] = [
    "count",
    "conversations",
    "contacts",
    "sum",
    "mean",
    "median",
    "p90",
    "business_sum",
    "business_mean",
    "business_median",
    "business_p90",
];

pub(super) fn csv_table(name: &str, leading: &[&str], rows: Vec<(Vec<String>, &FigureView)>) -> Response {
    let mut body = csv_line(&leading.iter().chain(FIGURE_CSV_HEADER.iter()).collect::<Vec<_>>());
    for (mut fields, figure) in rows {
        fields.extend(figure_csv(figure));
        body.extend(csv_line(&fields));
    }
    csv_response(axum::body::Body::from(body), name)
}

/// A period.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Period {
    /// From.
    since: DateTime<Utc>,
    /// To (excluded).
    until: DateTime<Utc>,
}

/// What a report's figures are: the definition version, the log position and the period.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct About {
    /// The metric definition version.
    version: u32,
    /// The global position the figures are as of.
    as_of_position: i64,
    /// The period.
    period: Period,
}

impl About {
    pub(super) fn of(scope: &Scope, as_of_position: i64, until: DateTime<Utc>) -> Self {
        Self { version: scope.version, as_of_position, period: Period { since: scope.since, until } }
    }
}

report_query! {
    /// Query of `GET /v1/reports/summary`.
    SummaryQuery {
        /// Fold every fact of the period instead of reading the hourly and daily rollups: slower
        /// over a long period, with median and p90 always values at their rank.
        exact: Option<bool>,
    }
}

/// One metric in the summary.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SummaryLine {
    /// The metric.
    metric: Metric,
    /// In the period.
    current: FigureView,
    /// In the period before, as long.
    previous: FigureView,
}

/// `GET /v1/reports/summary`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// What the figures are: their definition version, log position and period.
    #[serde(flatten)]
    about: About,
    /// The period before it, as long.
    previous_period: Period,
    /// Every metric.
    metrics: Vec<SummaryLine>,
}

/// `GET /v1/reports/summary`
#[utoipa::path(
    get,
    path = "/reports/summary",
    tag = "reports",
    summary = "Summarise every metric",
    description = "Every metric over the period (default: the last 30 days), beside the period before it: counts of facts, \
        conversations and contacts, and each duration's sum, mean, median and p90 in wall-clock and business seconds.",
    params(SummaryQuery),
    responses((status = 200, description = "The summary.", content((Summary = "application/json"), (String = "text/csv"))), (status = 404, response = crate::openapi::NotFound))
)]
pub async fn summary(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Query(query): Query<SummaryQuery>,
) -> Result<Response, ApiError> {
    require(&principal, SCOPE)?;
    let scope = query.scope(&state, &principal.tenant).await?;
    let as_of = scope.as_of(&state, query.min_position).await?;
    let length = scope.until - scope.since;
    let previous =
        Filter { since: Some(scope.since - length), until: Some(scope.since), ..scope.filter.clone() };
    let since = scope.since;
    let mut figures: BTreeMap<(Metric, bool), Figure> = BTreeMap::new();
    if from_rollups(&scope.filter, query.exact) {
        let period =
            |from, to| rollups::figures(state.store(), &principal.tenant, scope.version, None, &[], from, to);
        // Both periods at once: each reads its pieces in tasks of their own.
        let (now, before) = tokio::join!(period(since, scope.until), period(since - length, since));
        for (current, cells) in [(true, now?), (false, before?)] {
            figures.extend(cells.into_iter().map(|((metric, _), cell)| ((metric, current), cell.figure())));
        }
    } else {
        let both = Filter { since: previous.since, ..scope.filter.clone() };
        let tallies = fold(&state, &principal.tenant, scope.version, &both, |row| {
            vec![(row.metric, row.ended_at >= since)]
        })
        .await?;
        figures.extend(tallies.into_iter().map(|(key, tally)| (key, tally.figure())));
    }
    let lines: Vec<SummaryLine> = Metric::ALL
        .into_iter()
        .filter(|metric| metric.derived_in(scope.version))
        .map(|metric| SummaryLine {
            metric,
            current: from_figure(figures.remove(&(metric, true)), scope.version, &scope.filter, metric),
            previous: from_figure(figures.remove(&(metric, false)), scope.version, &previous, metric),
        })
        .collect();
    if wants_csv(&headers) {
        let mut rows = Vec::new();
        for line in &lines {
            rows.push((vec![line.metric.as_str().to_owned(), "current".into()], &line.current));
            rows.push((vec![line.metric.as_str().to_owned(), "previous".into()], &line.previous));
        }
        return Ok(csv_table("summary", &["metric", "period"], rows));
    }
    Ok(axum::Json(Summary {
        about: About::of(&scope, as_of, scope.until),
        previous_period: Period { since: scope.since - length, until: scope.since },
        metrics: lines,
    })
    .into_response())
}

report_query! {
    /// Query of `GET /v1/reports/timeseries`.
    TimeseriesQuery {
        /// The metric.
        #[param(value_type = Metric, required = true)]
        metric: Option<String>,
        /// The buckets: `hour`, `day` (default), `week` (from Monday) or `month`, local to `tz`.
        #[param(value_type = Option<BucketName>, inline)]
        group_by: Option<String>,
        /// Fold every fact of the period instead of reading each bucket from the rollups: slower
        /// over a long period, with median and p90 always values at their rank.
        exact: Option<bool>,
    }
}

/// The values of `group_by` (a schema only).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum BucketName {
    Hour,
    Day,
    Week,
    Month,
}

/// One bucket of a time series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Point {
    /// The bucket's first instant (a local midnight for days, weeks and months).
    start: DateTime<Utc>,
    /// Its facts.
    figure: FigureView,
}

/// `GET /v1/reports/timeseries`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Timeseries {
    /// What the figures are: their definition version, log position and period.
    #[serde(flatten)]
    about: About,
    /// The metric.
    metric: Metric,
    /// The buckets, every one of the period, empty ones included.
    data: Vec<Point>,
    /// The whole period (the summary's figure): the buckets' counts and sums add up to it.
    total: FigureView,
    /// Where the period had more than 1,000 buckets: the next bucket's start, to pass as `since`
    /// for the rest (the answer's `period` ends there); `null` when the period is complete.
    next_since: Option<DateTime<Utc>>,
}

/// `GET /v1/reports/timeseries`
#[utoipa::path(
    get,
    path = "/reports/timeseries",
    tag = "reports",
    summary = "A metric's time series",
    description = "One metric per hour, day, week or month of the period, in the time zone `tz` (a day is a local day, \
        23 or 25 hours long across a DST change), with the period's total. At most 1,000 buckets: a longer period is answered up to its 1,000th bucket, \
        with `next_since` to continue from. Each bucket is read from the rollups as a summary's period is (`exact=true` folds the facts).",
    params(TimeseriesQuery),
    responses((status = 200, description = "The series.", content((Timeseries = "application/json"), (String = "text/csv"))), (status = 404, response = crate::openapi::NotFound))
)]
pub async fn timeseries(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Query(query): Query<TimeseriesQuery>,
) -> Result<Response, ApiError> {
    require(&principal, SCOPE)?;
    let scope = query.scope(&state, &principal.tenant).await?;
    let metric = match metrics("metric", query.metric.as_deref())?.as_slice() {
        [one] => *one,
        [] => return Err(ApiError::invalid_field("metric", "is required")),
        _ => return Err(ApiError::invalid_field("metric", "takes one metric")),
    };
    let bucket = match query.group_by.as_deref() {
        None => Bucket::Day,
        Some(name) => Bucket::parse(name).ok_or_else(|| {
            ApiError::invalid_field("group_by", format!("{name:?} is not one of hour, day, week, month"))
        })?,
    };
    // A period of more buckets than one answer holds ends where the last bucket does.
    let (starts, next_since) = figures::buckets(scope.since, scope.until, bucket, scope.zone, MAX_BUCKETS);
    let until = next_since.unwrap_or(scope.until);
    let as_of = scope.as_of(&state, query.min_position).await?;
    let filter = Filter { metrics: vec![metric], until: Some(until), ..scope.filter.clone() };
    // Each bucket's span: the first starts at `since` at the earliest, the last ends at `until`.
    let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = starts
        .iter()
        .enumerate()
        .map(|(index, start)| {
            ((*start).max(scope.since), starts.get(index + 1).copied().unwrap_or(until).min(until))
        })
        .collect();
    let (bucket_figures, total): (Vec<Option<Figure>>, Option<Figure>) = if from_rollups(&filter, query.exact)
    {
        let (store, tenant, version) = (state.store(), &principal.tenant, scope.version);
        // Each bucket read as a summary's period is; the total is their cells merged, so the
        // buckets add up to it.
        let read: Vec<Option<cells::Cell>> = futures::stream::iter(spans.iter().copied())
            .map(|(from, to)| async move {
                let mut read = rollups::figures(store, tenant, version, None, &[metric], from, to).await?;
                Ok::<_, colloquy_infra::StoreError>(read.remove(&(metric, None)))
            })
            .buffered(BUCKETS_AT_ONCE)
            .try_collect()
            .await?;
        let whole = cells::Cell::merged(read.iter().flatten().cloned().collect());
        let total = (!whole.is_empty()).then(|| whole.figure());
        (read.iter().map(|cell| cell.as_ref().map(cells::Cell::figure)).collect(), total)
    } else {
        let zone = scope.zone;
        let mut tallies = fold(&state, &principal.tenant, scope.version, &filter, |row| {
            vec![Some(figures::bucket_start(row.ended_at, bucket, zone)), None]
        })
        .await?;
        let buckets = starts.iter().map(|start| tallies.remove(&Some(*start)).map(Tally::figure)).collect();
        (buckets, tallies.remove(&None).map(Tally::figure))
    };
    let total = from_figure(total, scope.version, &filter, metric);
    let data: Vec<Point> = starts
        .iter()
        .zip(&spans)
        .zip(bucket_figures)
        .map(|((start, (from, to)), figure)| {
            let bucket_filter = Filter { since: Some(*from), until: Some(*to), ..filter.clone() };
            Point { start: *start, figure: from_figure(figure, scope.version, &bucket_filter, metric) }
        })
        .collect();
    if wants_csv(&headers) {
        let rows = data.iter().map(|point| (vec![time(point.start)], &point.figure)).collect();
        return Ok(csv_table("timeseries", &["start"], rows));
    }
    Ok(axum::Json(Timeseries { about: About::of(&scope, as_of, until), metric, data, total, next_since })
        .into_response())
}

report_query! {
    /// Query of `GET /v1/reports/by/{dimension}`.
    ByQuery {
        /// Only these metrics (comma-separated; default every one).
        #[param(example = "first_response,resolution", pattern = r"^(conversation_opened|conversation_reopened|first_response|reply_time|resolution|first_resolution|full_resolution|bot_handoff|bot_resolution|requester_wait|agent_wait|sla_hit|sla_miss|incoming_message|outgoing_message|private_note)(,(conversation_opened|conversation_reopened|first_response|reply_time|resolution|first_resolution|full_resolution|bot_handoff|bot_resolution|requester_wait|agent_wait|sla_hit|sla_miss|incoming_message|outgoing_message|private_note))*$")]
        metric: Option<String>,
        /// Fold every fact of the period instead of reading the hourly and daily rollups: slower
        /// over a long period, with median and p90 always values at their rank.
        exact: Option<bool>,
    }
}

/// The dimensions a report breaks down by (a schema only).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum DimensionName {
    Agent,
    Team,
    Inbox,
    Channel,
    Label,
    Priority,
}

/// One metric of a row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MetricFigure {
    /// The metric.
    metric: Metric,
    /// Its facts in the row.
    figure: FigureView,
}

/// One row of a breakdown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ByRow {
    /// The dimension's value (the agent, team, ... id); `null` for facts without one.
    key: Option<String>,
    /// Each metric asked for.
    metrics: Vec<MetricFigure>,
}

/// `GET /v1/reports/by/{dimension}`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Breakdown {
    /// What the figures are: their definition version, log position and period.
    #[serde(flatten)]
    about: About,
    /// One row per value (by label: a fact with several labels counts in each).
    data: Vec<ByRow>,
}

/// `GET /v1/reports/by/{dimension}`
#[utoipa::path(
    get,
    path = "/reports/by/{dimension}",
    tag = "reports",
    summary = "Break metrics down by a dimension",
    description = "Each metric per agent (who replied, else the assignee then), team, inbox, channel, label or priority, \
        as they were when each fact ended: counts, conversations, and each duration's sum, mean, median and p90. \
        The rows' counts add up to the summary's (but for labels, where a fact counts once per label). \
        `?metric=outgoing_message` gives the outgoing message counts.",
    params(("dimension" = inline(DimensionName), Path, description = "agent, team, inbox, channel, label or priority"), ByQuery),
    responses((status = 200, description = "The rows.", content((Breakdown = "application/json"), (String = "text/csv"))), (status = 404, response = crate::openapi::NotFound))
)]
pub async fn by(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(dimension): Path<String>,
    headers: HeaderMap,
    Query(query): Query<ByQuery>,
) -> Result<Response, ApiError> {
    require(&principal, SCOPE)?;
    // An unknown dimension is a path that names nothing: 404, as an unknown id is.
    let dimension = Dimension::parse(&dimension).ok_or_else(|| {
        ApiError::not_found(format!(
            "report dimension {dimension:?} (dimensions: agent, team, inbox, channel, label, priority)"
        ))
    })?;
    let scope = query.scope(&state, &principal.tenant).await?;
    let mut wanted = metrics("metric", query.metric.as_deref())?;
    if wanted.is_empty() {
        wanted = Metric::ALL.to_vec();
    }
    let as_of = scope.as_of(&state, query.min_position).await?;
    let filter = Filter { metrics: wanted.clone(), ..scope.filter.clone() };
    let mut rows: BTreeMap<Option<String>, BTreeMap<Metric, Figure>> = BTreeMap::new();
    if from_rollups(&filter, query.exact) {
        let store = state.store();
        let cells = rollups::figures(
            store,
            &principal.tenant,
            scope.version,
            Some(dimension),
            &wanted,
            scope.since,
            scope.until,
        );
        for ((metric, key), cell) in cells.await? {
            rows.entry(key).or_default().insert(metric, cell.figure());
        }
    } else {
        let tallies = fold(&state, &principal.tenant, scope.version, &filter, |row| {
            dimension.keys(row).into_iter().map(|key| (key, row.metric)).collect()
        })
        .await?;
        for ((key, metric), tally) in tallies {
            rows.entry(key).or_default().insert(metric, tally.figure());
        }
    }
    let data: Vec<ByRow> = rows
        .into_iter()
        .map(|(key, mut tallies)| {
            let mut row_filter = filter.clone();
            match dimension {
                Dimension::Agent => row_filter.agent_id.clone_from(&key),
                Dimension::Team => row_filter.team_id.clone_from(&key),
                Dimension::Inbox => row_filter.inbox_id.clone_from(&key),
                Dimension::Channel => row_filter.channel.clone_from(&key),
                Dimension::Label => row_filter.label.clone_from(&key),
                Dimension::Priority => row_filter.priority.clone_from(&key),
            }
            let metrics = wanted
                .iter()
                .map(|metric| MetricFigure {
                    metric: *metric,
                    figure: from_figure(tallies.remove(metric), scope.version, &row_filter, *metric),
                })
                .collect();
            ByRow { key, metrics }
        })
        .collect();
    if wants_csv(&headers) {
        let mut lines = Vec::new();
        for row in &data {
            for figure in &row.metrics {
                let key = row.key.clone().unwrap_or_default();
                lines.push((vec![key, figure.metric.as_str().to_owned()], &figure.figure));
            }
        }
        return Ok(csv_table("breakdown", &["key", "metric"], lines));
    }
    Ok(axum::Json(Breakdown { about: About::of(&scope, as_of, scope.until), data }).into_response())
}

report_query! {
    /// Query of `GET /v1/reports/first-response-distribution` and `GET /v1/reports/inbox-labels`.
    DistributionQuery {}
}

/// One channel's first responses by band.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Bands {
    /// The channel.
    channel: String,
    /// First responses per band (`0-1h`, `1-4h`, `4-8h`, `8-24h`, `24h+`), every band listed.
    bands: BTreeMap<String, u64>,
    /// All of the channel's first responses.
    total: u64,
}

/// `GET /v1/reports/first-response-distribution`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Distribution {
    /// What the figures are: their definition version, log position and period.
    #[serde(flatten)]
    about: About,
    /// One row per channel.
    data: Vec<Bands>,
}

/// `GET /v1/reports/first-response-distribution`
#[utoipa::path(
    get,
    path = "/reports/first-response-distribution",
    tag = "reports",
    summary = "First response times by band and channel",
    description = "How many first responses of the period took 0-1 h, 1-4 h, 4-8 h, 8-24 h or longer (wall-clock), per channel.",
    params(DistributionQuery),
    responses((status = 200, description = "The bands.", content((Distribution = "application/json"), (String = "text/csv"))), (status = 404, response = crate::openapi::NotFound))
)]
pub async fn first_response_distribution(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Query(query): Query<DistributionQuery>,
) -> Result<Response, ApiError> {
    require(&principal, SCOPE)?;
    let scope = query.scope(&state, &principal.tenant).await?;
    let as_of = scope.as_of(&state, query.min_position).await?;
    let filter = Filter { metrics: vec![Metric::FirstResponse], ..scope.filter.clone() };
    let tallies = fold(&state, &principal.tenant, scope.version, &filter, |row| {
        vec![(row.channel.clone(), figures::first_response_band(row.value.unwrap_or_default()))]
    })
    .await?;
    let mut channels: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((channel, band), tally) in tallies {
        let bands = channels.entry(channel).or_insert_with(|| {
            figures::FIRST_RESPONSE_BANDS.iter().map(|(name, _)| ((*name).to_owned(), 0)).collect()
        });
        bands.insert(band.to_owned(), tally.figure().count);
    }
    let data: Vec<Bands> = channels
        .into_iter()
        .map(|(channel, bands)| Bands { total: bands.values().sum(), channel, bands })
        .collect();
    if wants_csv(&headers) {
        let mut body = csv_line(&["channel", "band", "count"]);
        for row in &data {
            for (band, count) in &row.bands {
                body.extend(csv_line(&[row.channel.as_str(), band.as_str(), &count.to_string()]));
            }
        }
        return Ok(csv_response(axum::body::Body::from(body), "first-response-distribution"));
    }
    Ok(axum::Json(Distribution { about: About::of(&scope, as_of, scope.until), data }).into_response())
}

/// One cell of the inbox by label matrix.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Cell {
    /// The inbox (`null`: none).
    inbox_id: Option<String>,
    /// The label (`null`: conversations without one).
    label: Option<String>,
    /// Conversations opened in the period in that inbox with that label when opened.
    conversations: u64,
}

/// `GET /v1/reports/inbox-labels`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Matrix {
    /// What the figures are: their definition version, log position and period.
    #[serde(flatten)]
    about: About,
    /// The non-empty cells.
    data: Vec<Cell>,
}

/// `GET /v1/reports/inbox-labels`
#[utoipa::path(
    get,
    path = "/reports/inbox-labels",
    tag = "reports",
    summary = "Conversations by inbox and label",
    description = "Conversations opened in the period, per inbox and per label they had when opened (a conversation with \
        several labels counts in each of its labels' cells).",
    params(DistributionQuery),
    responses((status = 200, description = "The matrix's cells.", content((Matrix = "application/json"), (String = "text/csv"))), (status = 404, response = crate::openapi::NotFound))
)]
pub async fn inbox_labels(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Query(query): Query<DistributionQuery>,
) -> Result<Response, ApiError> {
    require(&principal, SCOPE)?;
    let scope = query.scope(&state, &principal.tenant).await?;
    let as_of = scope.as_of(&state, query.min_position).await?;
    let filter = Filter { metrics: vec![Metric::ConversationOpened], ..scope.filter.clone() };
    let tallies = fold(&state, &principal.tenant, scope.version, &filter, |row| {
        Dimension::Label.keys(row).into_iter().map(|label| (row.inbox_id.clone(), label)).collect()
    })
    .await?;
    let data: Vec<Cell> = tallies
        .into_iter()
        .map(|((inbox_id, label), tally)| Cell {
            inbox_id,
            label,
            conversations: tally.figure().conversations,
        })
        .collect();
    if wants_csv(&headers) {
        let mut body = csv_line(&["inbox_id", "label", "conversations"]);
        for cell in &data {
            let fields = [
                cell.inbox_id.clone().unwrap_or_default(),
                cell.label.clone().unwrap_or_default(),
                cell.conversations.to_string(),
            ];
            body.extend(csv_line(&fields));
        }
        return Ok(csv_response(axum::body::Body::from(body), "inbox-labels"));
    }
    Ok(axum::Json(Matrix { about: About::of(&scope, as_of, scope.until), data }).into_response())
}

report_query! {
    /// Query of `GET /v1/reports/conversations`.
    ConversationsQuery {
        /// Rows per page, 1 to 1000 (default 100). CSV answers every row, unpaged.
        #[param(minimum = 1, maximum = 1000)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page (rows are in conversation id order).
        #[param(pattern = r"^[0-9a-f-]{36}$")]
        cursor: Option<String>,
    }
}

/// A wall-clock and a business duration, in seconds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Span {
    /// Wall-clock seconds.
    seconds: i64,
    /// Business seconds.
    business_seconds: i64,
}

fn span(pair: Option<(i64, i64)>) -> Option<Span> {
    pair.map(|(seconds, business_seconds)| Span { seconds, business_seconds })
}

/// One conversation's facts of the period, summed up.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationReport {
    conversation_id: String,
    contact_id: String,
    inbox_id: Option<String>,
    channel: String,
    /// The team, assignee, priority and labels at its last fact of the period.
    team_id: Option<String>,
    assignee_id: Option<String>,
    priority: String,
    labels: Vec<String>,
    /// A bot or AI assistant took part.
    bot: bool,
    /// When it opened, if in the period.
    opened_at: Option<DateTime<Utc>>,
    /// Its first response, if in the period.
    first_response: Option<Span>,
    /// Replies that ended a customer's wait, and their wall-clock seconds summed.
    replies: u64,
    reply_seconds: i64,
    /// Resolutions, and the time from the opening to the latest one.
    resolutions: u64,
    full_resolution: Option<Span>,
    reopens: u64,
    incoming_messages: u64,
    outgoing_messages: u64,
    private_notes: u64,
    /// Seconds the customer waited, the team waited and on hold, summed (version 1: `snoozed`
    /// is agent wait, and there is no on hold).
    requester_wait_seconds: i64,
    agent_wait_seconds: i64,
    on_hold_seconds: i64,
    sla_hits: u64,
    sla_misses: u64,
}

impl From<ConversationRow> for ConversationReport {
    fn from(row: ConversationRow) -> Self {
        Self {
            conversation_id: row.conversation_id,
            contact_id: row.contact_id,
            inbox_id: row.inbox_id,
            channel: row.channel,
            team_id: row.team_id,
            assignee_id: row.assignee_id,
            priority: row.priority,
            labels: row.labels,
            bot: row.bot,
            opened_at: row.opened_at,
            first_response: span(row.first_response),
            replies: row.replies,
            reply_seconds: row.reply_seconds,
            resolutions: row.resolutions,
            full_resolution: span(row.full_resolution),
            reopens: row.reopens,
            incoming_messages: row.incoming_messages,
            outgoing_messages: row.outgoing_messages,
            private_notes: row.private_notes,
            requester_wait_seconds: row.requester_wait_seconds,
            agent_wait_seconds: row.agent_wait_seconds,
            on_hold_seconds: row.on_hold_seconds,
            sla_hits: row.sla_hits,
            sla_misses: row.sla_misses,
        }
    }
}

const CONVERSATION_CSV_HEADER: [&str; 26] = [
    "conversation_id",
    "contact_id",
    "inbox_id",
    "channel",
    "team_id",
    "assignee_id",
    "priority",
    "labels",
    "bot",
    "opened_at",
    "first_response_seconds",
    "first_response_business_seconds",
    "replies",
    "reply_seconds",
    "resolutions",
    "full_resolution_seconds",
    "full_resolution_business_seconds",
    "reopens",
    "incoming_messages",
    "outgoing_messages",
    "private_notes",
    "requester_wait_seconds",
    "agent_wait_seconds",
    "on_hold_seconds",
    "sla_hits",
    "sla_misses",
];

fn conversation_record(row: &ConversationRow) -> Vec<String> {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let pair = |value: Option<(i64, i64)>, first: bool| {
        value.map(|(a, b)| if first { a } else { b }.to_string()).unwrap_or_default()
    };
    vec![
        row.conversation_id.clone(),
        row.contact_id.clone(),
        text(&row.inbox_id),
        row.channel.clone(),
        text(&row.team_id),
        text(&row.assignee_id),
        row.priority.clone(),
        row.labels.join(";"),
        row.bot.to_string(),
        row.opened_at.map(time).unwrap_or_default(),
        pair(row.first_response, true),
        pair(row.first_response, false),
        row.replies.to_string(),
        row.reply_seconds.to_string(),
        row.resolutions.to_string(),
        pair(row.full_resolution, true),
        pair(row.full_resolution, false),
        row.reopens.to_string(),
        row.incoming_messages.to_string(),
        row.outgoing_messages.to_string(),
        row.private_notes.to_string(),
        row.requester_wait_seconds.to_string(),
        row.agent_wait_seconds.to_string(),
        row.on_hold_seconds.to_string(),
        row.sla_hits.to_string(),
        row.sla_misses.to_string(),
    ]
}

/// `GET /v1/reports/conversations`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationsPage {
    /// What the rows are: their definition version, log position and period.
    #[serde(flatten)]
    about: About,
    /// One row per conversation with facts in the period, by id.
    data: Vec<ConversationReport>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// `GET /v1/reports/conversations`
#[utoipa::path(
    get,
    path = "/reports/conversations",
    tag = "reports",
    summary = "One row per conversation",
    description = "Each conversation with facts in the period, its facts summed up: first response, replies, \
        resolutions, reopens, messages, waits and SLA outcomes, with the team, assignee, priority and labels at its \
        last fact. `Accept: text/csv` answers every row.",
    params(ConversationsQuery),
    responses((status = 200, description = "A page of rows (or every row as CSV).",
        content((ConversationsPage = "application/json"), (String = "text/csv"))),
        (status = 404, response = crate::openapi::NotFound))
)]
pub async fn conversations(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Query(query): Query<ConversationsQuery>,
) -> Result<Response, ApiError> {
    require(&principal, SCOPE)?;
    let scope = query.scope(&state, &principal.tenant).await?;
    let limit = match query.limit {
        None => 100,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => return Err(ApiError::invalid_field("limit", "must be 1 to 1000")),
    };
    let after = query.cursor.clone().filter(|c| !c.is_empty());
    let as_of = scope.as_of(&state, query.min_position).await?;
    let mut folded = ConversationRows::default();
    each_fact(&state, &principal.tenant, scope.version, &scope.filter, |row| folded.add(row)).await?;
    let rows = folded.into_rows();
    if wants_csv(&headers) {
        let mut body = csv_line(&CONVERSATION_CSV_HEADER);
        for row in rows {
            body.extend(csv_line(&conversation_record(&row)));
        }
        return Ok(csv_response(axum::body::Body::from(body), "conversations"));
    }
    let mut page: Vec<ConversationRow> = rows
        .filter(|row| after.as_ref().is_none_or(|after| row.conversation_id > *after))
        .take(limit + 1)
        .collect();
    let next_cursor = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|row| row.conversation_id.clone())
    } else {
        None
    };
    Ok(axum::Json(ConversationsPage {
        about: About::of(&scope, as_of, scope.until),
        data: page.into_iter().map(Into::into).collect(),
        next_cursor,
    })
    .into_response())
}

/// Query of `GET /v1/reports/live`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LiveQuery {
    /// Read-your-writes: wait until the counts reflect this global position.
    #[param(minimum = 0)]
    min_position: Option<i64>,
}

/// Conversations as they stand now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Live {
    /// Open.
    open: i64,
    /// Open and waiting for a reply.
    unattended: i64,
    /// Open, pending, snoozed or with a bot, and assigned to nobody.
    unassigned: i64,
    /// Pending.
    pending: i64,
    /// Snoozed.
    snoozed: i64,
    /// The global position the counts are as of.
    as_of_position: i64,
}

/// `GET /v1/reports/live`
#[utoipa::path(
    get,
    path = "/reports/live",
    tag = "reports",
    summary = "Live conversation counts",
    description = "Conversations as they stand now, from the inbox read model: open, unattended (open and waiting for a reply), \
        unassigned (of those not resolved), pending and snoozed.",
    params(LiveQuery),
    responses((status = 200, description = "The counts.", body = Live))
)]
pub async fn live(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<LiveQuery>,
) -> Result<axum::Json<Live>, ApiError> {
    require(&principal, SCOPE)?;
    if query.min_position.is_some_and(|p| p < 0) {
        return Err(ApiError::invalid_field("min_position", "must be 0 or more"));
    }
    state.await_projection(conversation_list::NAME, query.min_position).await?;
    let as_of =
        state.projectors().iter().find(|p| p.name() == conversation_list::NAME).map_or(0, |p| p.applied());
    let tenant = principal.tenant.as_str();
    let live = [Status::Open, Status::Pending, Status::Snoozed, Status::Bot];
    let counts = conversation_list::counts(state.store(), tenant, &live, None).await?;
    let status = |s: Status| counts.by_status.get(s.as_str()).copied().unwrap_or_default();
    let unattended = conversation_list::count_waiting(state.store(), tenant, Status::Open).await?;
    Ok(axum::Json(Live {
        open: status(Status::Open),
        unattended,
        unassigned: counts.unassigned,
        pending: status(Status::Pending),
        snoozed: status(Status::Snoozed),
        as_of_position: as_of,
    }))
}
