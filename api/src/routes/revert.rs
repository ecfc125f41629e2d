//! `POST /v1/commands/{correlation_id}/revert`: undoes what one request did (a bulk resolve, a
//! label sweep) with compensating events, decided by the aggregates' own rules
//! (`colloquy_domain::compensate`). History is never rewritten: the undo is new events, each
//! caused by the last event of the request on its aggregate.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use serde::Serialize;
use uuid::Uuid;

use colloquy_domain::compensate::Compensate;
use colloquy_domain::personal::PersonalData;
use colloquy_domain::{CommandContext, Contact, Conversation, Footprint, Snapshot, TenantOwned};
use colloquy_infra::{Intent, Origin, Repository, StoredEvent, Until};

use crate::extract::{require, Auth, Path};
use crate::problem::{command_failed, ApiError};
use crate::routes::{origin, POSITION_HEADER};
use crate::state::AppState;

/// The most events one revert undoes.
const MAX_EVENTS: i64 = 10_000;

/// One aggregate a revert changed back.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevertedView {
    /// `conversation` or `contact`.
    aggregate_type: String,
    /// Its id.
    aggregate_id: String,
    /// The compensating events' types, in order.
    events: Vec<String>,
    /// Its version after them.
    version: usize,
}

/// What a revert did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevertView {
    /// The request undone.
    reverted_correlation_id: Uuid,
    /// The revert's own correlation id, which its events carry.
    correlation_id: Uuid,
    /// Each aggregate changed back (one the request left as it found is not listed).
    reverted: Vec<RevertedView>,
}

/// What undoing one aggregate's part takes: its commands, the version the request left it at,
/// and the event that causes them.
struct Plan<A: cqrs_es::Aggregate> {
    id: String,
    commands: Vec<A::Command>,
    expected: usize,
    causation: Option<Uuid>,
}

/// One aggregate's part of the request, planned: refused (with why) where it cannot be undone
/// or has changed since.
async fn plan<A>(
    repository: &Repository<A>,
    tenant: &colloquy_domain::TenantId,
    id: &str,
    events: &[&StoredEvent],
) -> Result<Result<Plan<A>, String>, ApiError>
where
    A: Compensate<Services = CommandContext> + TenantOwned + Footprint + Snapshot + PersonalData + Clone,
    A::Command: Clone,
{
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(Err("no events".into()));
    };
    let current = repository.store().current_version(tenant, A::TYPE, id).await?;
    if current != last.sequence {
        return Ok(Err(format!(
            "{} {id} changed since: it is at version {current}, the request left it at {}",
            A::TYPE,
            last.sequence
        )));
    }
    let decoded = events
        .iter()
        .map(|stored| stored.decode::<A::Event>().map_err(|e| ApiError::internal(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    let before = match first.position {
        Some(position) if first.sequence > 1 => repository
            .read_at(tenant, id, Until::Position(position - 1), |aggregate, _| aggregate.clone())
            .await?
            .map(|(aggregate, _)| aggregate)
            .unwrap_or_default(),
        _ => A::default(),
    };
    let now = repository
        .read(tenant, id, |aggregate, _| aggregate.clone())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let Some(now) = now else { return Ok(Err(format!("{} {id} is gone", A::TYPE))) };
    let causation = last.metadata.str_field("event_id").and_then(|id| Uuid::parse_str(&id).ok());
    Ok(A::compensate(&before, &now, &decoded)
        .map(|commands| Plan {
            id: id.to_owned(),
            commands,
            expected: usize::try_from(last.sequence).unwrap_or(usize::MAX),
            causation,
        })
        .map_err(|reason| format!("{} {id}: {reason}", A::TYPE)))
}

/// Runs a plan's commands, the first only on the version the request left (so nothing that
/// happened since is undone).
async fn run<A>(
    repository: &Repository<A>,
    plan: Plan<A>,
    origin: &Origin,
    position: &mut i64,
) -> Result<RevertedView, ApiError>
where
    A: Compensate<Services = CommandContext> + TenantOwned + Footprint + Snapshot + PersonalData,
    A::Command: Clone,
    ApiError: From<A::Error>,
{
    let origin = Origin { causation_id: plan.causation, ..origin.clone() };
    let mut view = RevertedView {
        aggregate_type: A::TYPE.to_owned(),
        aggregate_id: plan.id.clone(),
        events: Vec::new(),
        version: plan.expected,
    };
    let mut expected = Some(plan.expected);
    for command in plan.commands {
        let committed = repository
            .execute(&plan.id, command, Intent::Update, expected.take(), &origin, |_, version| version)
            .await
            .map_err(|e| command_failed(e, format!("{} {}", A::TYPE, plan.id)))?;
        view.events.extend(committed.events.iter().map(|e| cqrs_es::DomainEvent::event_type(&e.payload)));
        view.version = committed.version;
        *position = (*position).max(committed.position.unwrap_or(0));
    }
    Ok(view)
}

/// `POST /v1/commands/{correlation_id}/revert`
#[utoipa::path(
    post,
    path = "/commands/{correlation_id}/revert",
    tag = "audit",
    summary = "Revert what one request did",
    description = "Compensating events for every change one request made (its events carry the request's \
        correlation id: the `X-Correlation-Id` it sent, or the one its events name): each conversation and contact \
        it changed has the fields it changed set back, by the same rules as any command, and each compensating \
        event names the request's last event on that aggregate as its causation. Refused as a whole (409, with the \
        reasons) when any aggregate changed since the request, or when the request did what cannot be undone: \
        a message sent, a conversation or contact created, deleted or erased, a read receipt, a delivery report, \
        a group's or a setting's change. What Colloquy's own processes did in response (SLA clocks, timers) \
        follows the compensation. Scope `admin`.",
    params(("correlation_id" = Uuid, Path, description = "The request's correlation id.")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "What was changed back.", body = RevertView)
    )
)]
pub async fn revert(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Path(correlation_id): Path<Uuid>,
) -> Result<(HeaderMap, axum::Json<RevertView>), ApiError> {
    require(&principal, "admin")?;
    let mut origin = origin(&principal, &headers)?;
    let own = origin.correlation_id.get_or_insert_with(Uuid::now_v7);
    let new_correlation = *own;
    if new_correlation == correlation_id {
        return Err(ApiError::bad_request("a revert needs a correlation id of its own"));
    }
    let tenant = &principal.tenant;
    let events = state.store().correlated(tenant, &correlation_id.to_string(), MAX_EVENTS + 1).await?;
    if events.len() > usize::try_from(MAX_EVENTS).unwrap_or(usize::MAX) {
        return Err(ApiError::refused(format!(
            "the request has over {MAX_EVENTS} events; it is not reverted at once"
        )));
    }
    // The request's own events: what Colloquy's processes did in response follows the undo.
    let mut streams: BTreeMap<(String, String), Vec<&StoredEvent>> = BTreeMap::new();
    let mut order = Vec::new();
    for event in events.iter().filter(|e| e.metadata.str_field("actor_kind").as_deref() != Some("system")) {
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        if !streams.contains_key(&key) {
            order.push(key.clone());
        }
        streams.entry(key).or_default().push(event);
    }
    if order.is_empty() {
        return Err(ApiError::not_found(format!("a request with correlation id {correlation_id}")));
    }
    let (mut conversations, mut contacts, mut refusals) = (Vec::new(), Vec::new(), Vec::new());
    for key in &order {
        let part = &streams[key];
        let (kind, id) = (key.0.as_str(), key.1.as_str());
        match kind {
            "conversation" => match plan(state.conversations(), tenant, id, part).await? {
                Ok(plan) => conversations.push(plan),
                Err(reason) => refusals.push(reason),
            },
            "contact" => match plan(state.contacts(), tenant, id, part).await? {
                Ok(plan) => contacts.push(plan),
                Err(reason) => refusals.push(reason),
            },
            other => refusals.push(format!("{other} {id}: a {other}'s changes are not compensated")),
        }
    }
    if !refusals.is_empty() {
        return Err(ApiError::conflict(format!("the request cannot be reverted: {}", refusals.join("; "))));
    }
    let (mut reverted, mut position) = (Vec::new(), 0);
    for plan in contacts {
        reverted.push(run::<Contact>(state.contacts(), plan, &origin, &mut position).await?);
    }
    for plan in conversations {
        reverted.push(run::<Conversation>(state.conversations(), plan, &origin, &mut position).await?);
    }
    reverted.retain(|view| !view.events.is_empty());
    let mut answer = HeaderMap::new();
    if position > 0 {
        answer.insert(POSITION_HEADER, HeaderValue::from(position));
    }
    Ok((
        answer,
        axum::Json(RevertView {
            reverted_correlation_id: correlation_id,
            correlation_id: new_correlation,
            reverted,
        }),
    ))
}
