//! `GET /v1/events/stream`: the tenant's events as Server-Sent Events, live, each a CloudEvents
//! JSON object with its global position as the SSE id. `Last-Event-ID` (sent by browsers on
//! reconnect) or `after` resumes after a position without loss; without either, the stream
//! starts at the log's current head. Filters: `aggregate_type`, `aggregate_id`, `event_type`.
//! Streams end when the server shuts down, and within seconds of their token being revoked or
//! expiring (it is verified again every [`TOKEN_RECHECK`]); clients reconnect with
//! `Last-Event-ID`. A token has at most `MAX_STREAMS_PER_TOKEN` streams open at once. All
//! streams of a process follow one reader of the log (`log_feed.rs`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use colloquy_domain::TenantId;
use colloquy_infra::envelope::cloud_event_json;
use colloquy_infra::StoredEvent;

use crate::extract::{require, Auth, Query};
use crate::problem::ApiError;
use crate::state::{AppState, StreamSlot};

/// Events read from the log per round, while a stream catches up.
const BATCH: i64 = 500;
/// How often a stream verifies its token again (through the cache of verified tokens, which
/// keeps one at most 5 s): a revoked or expired token's streams end within seconds.
const TOKEN_RECHECK: Duration = Duration::from_secs(1);

/// One message of the stream, as Server-Sent Events carry it (the schema of one event, as
/// OpenAPI 3.1 describes a `text/event-stream`).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // A schema only: the stream writes its events with axum's `Event`.
pub struct StreamEvent {
    /// The event's global position: send it back as `Last-Event-ID` to resume after it.
    #[schema(pattern = "^[0-9]+$")]
    id: String,
    /// The event as a CloudEvents 1.0 JSON object, as text.
    data: String,
}

/// Query of `GET /v1/events/stream`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Start after this global position (`Last-Event-ID` wins when both are given).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Only events of this aggregate type (`conversation`, `contact`, `group`).
    aggregate_type: Option<String>,
    /// Only events of this aggregate.
    aggregate_id: Option<String>,
    /// Only events of this type (e.g. `MessageAdded`).
    event_type: Option<String>,
}

struct Follow {
    state: AppState,
    tenant: TenantId,
    after: i64,
    query: StreamQuery,
    pending: VecDeque<StoredEvent>,
    /// The process's shared reader of the log, once subscribed.
    feed: Option<tokio::sync::broadcast::Receiver<std::sync::Arc<crate::log_feed::Batch>>>,
    /// Whether the stream reads the log itself, to reach the feed.
    catching_up: bool,
    closing: tokio::sync::watch::Receiver<bool>,
    /// The bearer secret the stream was opened with, verified again every [`TOKEN_RECHECK`].
    secret: String,
    checked_at: tokio::time::Instant,
    /// The token's place among its streams, given back when the stream is dropped.
    _slot: StreamSlot,
}

impl Follow {
    /// Whether the token still holds: false once it is revoked or expired (a store error keeps
    /// the stream going; the next check tries again).
    async fn token_holds(&mut self) -> bool {
        if self.checked_at.elapsed() < TOKEN_RECHECK {
            return true;
        }
        self.checked_at = tokio::time::Instant::now();
        match self.state.authenticate(&self.secret).await {
            Ok(principal) => principal.is_some(),
            Err(error) => {
                tracing::warn!(%error, "event stream could not verify its token; trying again");
                true
            }
        }
    }

    fn wanted(&self, event: &StoredEvent) -> bool {
        let q = &self.query;
        q.aggregate_type.as_ref().is_none_or(|t| *t == event.aggregate_type)
            && q.aggregate_id.as_ref().is_none_or(|id| *id == event.aggregate_id)
            && q.event_type.as_ref().is_none_or(|t| *t == event.event_type)
    }

    /// Passes on the events of `events` after this stream's position that it wants.
    fn take<'a>(&mut self, events: impl Iterator<Item = &'a StoredEvent>) {
        let after = self.after;
        for event in events.filter(|e| e.position.is_some_and(|p| p > after)) {
            self.after = self.after.max(event.position.unwrap_or(after));
            if self.wanted(event) {
                self.pending.push_back(event.clone());
            }
        }
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if *self.closing.borrow() || !self.token_holds().await {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                let id = event.position.unwrap_or_default().to_string();
                let data = cloud_event_json(&event);
                return Some((Ok(Event::default().id(id).data(data)), self));
            }
            if self.feed.is_none() {
                // Subscribed before catching up, so that nothing committed meanwhile is missed.
                self.feed = Some(self.state.log_feed().subscribe());
                self.catching_up = true;
            }
            if self.catching_up {
                let head = self.state.log().head();
                self.state.log_feed().count_read();
                match self.state.log().read(self.after, BATCH, Some(&self.tenant)).await {
                    Ok(events) if !events.is_empty() => self.take(events.iter()),
                    // Nothing of the tenant's through `head`: the feed goes on from there.
                    Ok(_) => {
                        self.after = self.after.max(head);
                        self.catching_up = false;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "event stream could not read the log; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                continue;
            }
            let Some(feed) = self.feed.as_mut() else { continue };
            tokio::select! {
                batch = feed.recv() => match batch {
                    Ok(batch) if batch.after <= self.after => {
                        let tenant = self.tenant.as_str();
                        let ours: Vec<StoredEvent> = batch
                            .events
                            .iter()
                            .filter(|(owner, _)| owner.as_deref() == Some(tenant))
                            .map(|(_, event)| event.clone())
                            .collect();
                        self.take(ours.iter());
                        self.after = self.after.max(batch.last);
                    }
                    // Batches this stream did not see (it started or fell behind): it reads the
                    // log itself until it has caught up.
                    Ok(_) | Err(RecvError::Lagged(_)) => self.catching_up = true,
                    Err(RecvError::Closed) => self.feed = None,
                },
                _ = self.closing.changed() => {}
                () = tokio::time::sleep(TOKEN_RECHECK) => {}
            }
        }
    }
}

/// `GET /v1/events/stream`
#[utoipa::path(
    get,
    path = "/events/stream",
    tag = "events",
    summary = "Follow the tenant's events live (Server-Sent Events)",
    description = "Each SSE message is one event as a CloudEvents 1.0 JSON object, with its global position as \
        the SSE `id`. `Last-Event-ID` (sent by browsers on reconnect) or `after` resumes after a position \
        without loss; without either the stream starts at the log's head. Streams end when the server shuts \
        down; reconnect with `Last-Event-ID`.",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, pattern = "^[0-9]{1,18}$", description = "Resume after this global position (wins over `after`).", example = "1042")
    ),
    responses((status = 200, description = "An endless `text/event-stream` of CloudEvents.",
        content_type = "text/event-stream", body = StreamEvent,
        example = "id: 1043\nevent: MessageAdded\ndata: {\"specversion\":\"1.0\",\"id\":\"0192f3c4-5a6b-7c8d-9e0f-1a2b3c4d5e6f\",\"type\":\"MessageAdded\",\"source\":\"colloquy/default/conversation\",\"subject\":\"0192f3c4-0000-7000-8000-000000000001\",\"data\":{}}\n\n"),
        (status = 429, response = crate::openapi::TooManyStreams))
)]
pub async fn stream(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    require(&principal, "events:read")?;
    let secret = headers.get(axum::http::header::AUTHORIZATION).and_then(crate::extract::bearer_secret);
    let secret =
        secret.ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <token>"))?.to_owned();
    let slot = state
        .open_stream(principal.token_id)
        .ok_or_else(|| ApiError::too_many_streams(crate::state::MAX_STREAMS_PER_TOKEN))?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|v| (1..=18).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid_field("Last-Event-ID", "must be a global position: 1 to 18 digits")
                })?,
        ),
    };
    if query.after.is_some_and(|a| a < 0) {
        return Err(ApiError::invalid_field("after", "must be 0 or more"));
    }
    let after = match last_event_id.or(query.after) {
        Some(after) => after,
        None => colloquy_infra::log::read_head(state.store()).await?,
    };
    let closing = state.closing();
    let follow = Follow {
        state,
        tenant: principal.tenant,
        after,
        query,
        pending: VecDeque::new(),
        feed: None,
        catching_up: true,
        closing,
        secret,
        checked_at: tokio::time::Instant::now(),
        _slot: slot,
    };
    let events = stream::unfold(follow, Follow::next);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
