//! `GET /v1/conversations/{id}/inbox-row`: one conversation's row of the inbox list, now (the
//! read model's row) or as it stood at `as_of`/`at_position`, folded from the conversation's and
//! its contact's events up to then by the read model's own fold (`ConversationRow::apply`,
//! `ContactSummary::apply`).

use axum::extract::State;
use uuid::Uuid;

use colloquy_domain::{ContactEvent, ConversationEvent, TenantId};
use colloquy_infra::{Store, Until};
use colloquy_projections::conversation_list::{self, ContactSummary, ConversationRow};

use crate::extract::{require, Auth, Path, Query};
use crate::point_in_time::{not_yet, PointInTime};
use crate::problem::ApiError;
use crate::routes::Versioned;
use crate::state::AppState;
use crate::views::ConversationView;

/// Events read per page of a stream.
const PAGE: i64 = 1_000;

/// Feeds `fold` every event of one stream that had happened by `until`, in order; the
/// sequence and global position of the last one.
async fn fold_stream(
    store: &Store,
    tenant: &TenantId,
    (aggregate_type, id): (&str, &str),
    until: Until,
    mut fold: impl FnMut(&colloquy_infra::StoredEvent) -> Result<(), ApiError>,
) -> Result<(i64, i64), ApiError> {
    let (mut after, mut position) = (0, 0);
    loop {
        let page = store.stream_page(tenant, aggregate_type, id, after, PAGE).await?;
        if page.is_empty() {
            return Ok((after, position));
        }
        for stored in page {
            if !until.includes(&stored) {
                return Ok((after, position));
            }
            fold(&stored)?;
            after = stored.sequence;
            position = stored.position.unwrap_or(position);
        }
    }
}

fn decoded<E: serde::de::DeserializeOwned>(stored: &colloquy_infra::StoredEvent) -> Result<E, ApiError> {
    stored.decode::<E>().map_err(|error| ApiError::internal(&error))
}

/// `GET /v1/conversations/{id}/inbox-row`
#[utoipa::path(
    get,
    path = "/conversations/{id}/inbox-row",
    tag = "inbox",
    summary = "Read one conversation's inbox row",
    description = "The conversation as the inbox list shows it (with its contact's name, e-mail and phone). With `as_of` or \
        `at_position`, the row as it stood then, folded from the conversation's and its contact's events up to then by the \
        read model's own code; `Colloquy-Position` names the last conversation event folded.",
    params(("id" = Uuid, Path, description = "The conversation's id."), PointInTime),
    responses(
        (status = 200, description = "The row; `ETag` is the conversation's version (then).", body = ConversationView),
        (status = 410, response = crate::openapi::Gone)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(conversation_id): Path<Uuid>,
    Query(point): Query<PointInTime>,
) -> Result<Versioned<ConversationView>, ApiError> {
    require(&principal, "conversations:read")?;
    let id = conversation_id.to_string();
    let gone = || ApiError::gone(format!("conversation {conversation_id} was deleted then"));
    let Some(until) = point.until()? else {
        let row = conversation_list::get(state.store(), principal.tenant.as_str(), &id).await?.ok_or_else(
            || ApiError::not_found(format!("conversation {conversation_id} (not in the inbox yet)")),
        )?;
        if row.deleted {
            return Err(gone());
        }
        let version = usize::try_from(row.version).unwrap_or(0);
        return Ok(Versioned::ok(version, ConversationView::from_row(row)));
    };
    let store = state.store();
    let mut slot: Option<ConversationRow> = None;
    let (version, position) = fold_stream(store, &principal.tenant, ("conversation", &id), until, |stored| {
        let event: ConversationEvent = decoded(stored)?;
        ConversationRow::apply_in_place(&mut slot, &event, &stored.aggregate_id, stored.sequence);
        Ok(())
    })
    .await?;
    let mut row = slot.ok_or_else(|| not_yet(&format!("conversation {conversation_id}")))?;
    if row.deleted {
        return Err(gone());
    }
    let mut contact: Option<ContactSummary> = None;
    fold_stream(store, &principal.tenant, ("contact", &row.contact_id.clone()), until, |stored| {
        let event: ContactEvent = decoded(stored)?;
        contact = ContactSummary::apply(contact.take(), &event);
        Ok(())
    })
    .await?;
    row.contact = contact.unwrap_or_default();
    let version = usize::try_from(version).unwrap_or(0);
    Ok(Versioned::ok(version, ConversationView::from_row(row)).at(Some(position)))
}
