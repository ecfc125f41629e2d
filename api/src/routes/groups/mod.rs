//! `/v1/groups`: create a WhatsApp-style group and manage it as the inbox's own number: its
//! members and their roles (now, or `as_of` any past moment), metadata, invite link, join
//! requests, settings, leaving, provider sync requests, and its history.
//!
//! Every command here acts as [`GroupActor::Inbox`], so the domain checks it against the inbox
//! member's role and the group's settings; provider reports come in through other paths.
//!
//! `GET /v1/groups/{id}/members?as_of=<time>` folds the group's own stream up to that moment
//! rather than reading a membership-history read model: a stream is ordered by sequence and
//! each command's events share its time, so the prefix of events that happened by `as_of` is
//! exactly the group as it stood then, with no projector lag and nothing to keep in step.

use std::cmp::Reverse;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use colloquy_domain::contact::ContactStatus;
use colloquy_domain::group::{
    GroupActor, GroupMember, GroupMetadataPatch, GroupSettings, GroupSettingsPatch, MemberAddMode, NewGroup,
    ProviderView, Role, SYNC_COOLDOWN,
};
use colloquy_domain::{Contact, ContactId, Group, GroupCommand, GroupEvent, GroupId};
use colloquy_infra::tokens::Principal;
use colloquy_infra::{Committed, Intent};
use colloquy_projections::group_members;

use crate::extract::{etag, require, Auth, IfMatch, Json, Path, Query};
use crate::instant::Instant;
use crate::paging::{cursor, PageParams};
use crate::participants::{resolve_participants, Participant};
use crate::point_in_time::{not_yet, PointInTime};
use crate::problem::{command_failed, ApiError};
use crate::routes::contacts::stream_events;
use crate::routes::Ask;
use crate::routes::{origin, Versioned, POSITION_HEADER};
use crate::serde_util::double_option;
use crate::state::AppState;

pub mod members;
pub mod provider;
use crate::views::{
    ContactGroupView, EventView, GroupInviteView, GroupMemberView, GroupMembersPage, GroupView,
    JoinRequestView, Page,
};

const READ: &str = "groups:read";

const WRITE: &str = "groups:write";

/// Body of `POST /v1/groups`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"inbox_id": "whatsapp-main", "inbox_contact_id": "0192f3c4-5a6b-7c8d-9e0f-1a2b3c4d5e6f", "subject": "Book club", "participants": ["0192f3c4-0000-7000-8000-000000000002"], "settings": {"announce": false}}))]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    id: Option<Uuid>,
    inbox_id: String,
    /// The contact that stands for the inbox's own number.
    inbox_contact_id: Uuid,
    /// The owner when registering an existing group; absent, the inbox owns the group.
    owner_id: Option<Uuid>,
    provider_group_id: Option<String>,
    subject: String,
    description: Option<String>,
    /// The other participants, as contact ids or E.164 numbers (matched to the contact with that
    /// number, or a new contact); they join as members.
    #[serde(
        default,
        deserialize_with = "crate::bounded::at_most::<_, _, { colloquy_domain::group::MAX_MEMBERS }>"
    )]
    #[schema(max_items = 1024)]
    participants: Vec<Participant>,
    settings: Option<SettingsBody>,
    invite_code: Option<String>,
}

/// Settings in a request body: `POST /v1/groups`'s `settings` and `PATCH /v1/groups/{id}/settings`.
/// Unknown names are refused rather than ignored, so a misspelt setting is not a silent no-op.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"announce": true, "member_add_mode": "all_members"}))]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    announce: Option<bool>,
    restrict: Option<bool>,
    join_approval_mode: Option<bool>,
    member_add_mode: Option<MemberAddMode>,
}

impl From<SettingsBody> for GroupSettingsPatch {
    fn from(body: SettingsBody) -> Self {
        Self {
            announce: body.announce,
            restrict: body.restrict,
            join_approval_mode: body.join_approval_mode,
            member_add_mode: body.member_add_mode,
        }
    }
}

/// Body of `PATCH /v1/groups/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"subject": "Book club 2027", "description": null}))]
#[serde(deny_unknown_fields)]
pub struct PatchGroup {
    subject: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    avatar_url: Option<Option<String>>,
}

/// Body of `POST /v1/groups/{id}/join-requests`: exactly one of the two lists.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"approve": ["0192f3c4-0000-7000-8000-000000000004"]}))]
#[serde(deny_unknown_fields)]
pub struct HandleJoinRequests {
    #[serde(
        default,
        deserialize_with = "crate::bounded::optional_at_most::<_, _, { colloquy_domain::group::MAX_MEMBERS }>"
    )]
    #[schema(max_items = 1024)]
    approve: Option<Vec<Uuid>>,
    #[serde(
        default,
        deserialize_with = "crate::bounded::optional_at_most::<_, _, { colloquy_domain::group::MAX_MEMBERS }>"
    )]
    #[schema(max_items = 1024)]
    reject: Option<Vec<Uuid>>,
}

/// Body of `POST /v1/groups/{id}/sync`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"force": false}))]
#[serde(deny_unknown_fields)]
pub struct RequestSync {
    #[serde(default)]
    force: bool,
}

/// Answer of `POST /v1/groups/{id}/sync`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SyncAnswer {
    /// A sync job will fetch the provider's view.
    Queued,
    /// Nothing was queued: a sync was requested within the cooldown.
    Skipped {
        /// Why.
        reason: String,
        /// When the last accepted request was made.
        last_requested_at: DateTime<Utc>,
        /// From when a request without `force` is accepted.
        next_due_at: DateTime<Utc>,
    },
}

fn what(group_id: Uuid) -> String {
    format!("group {group_id}")
}

/// Runs a command on an existing group of the caller's tenant and reads `view` from the result.
async fn run<V>(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    group_id: Uuid,
    expected: Option<usize>,
    command: GroupCommand,
    view: impl FnOnce(&Group, usize) -> V,
) -> Result<(Committed<Group, V>, Option<i64>), ApiError> {
    let ask = Ask { scope: WRITE, kind: "group", id: group_id, intent: Intent::Update, expected, command };
    let committed = crate::routes::command(state.groups(), principal, headers, ask, view).await?;
    let position = committed.position;
    Ok((committed, position))
}

async fn run_for_view(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    group_id: Uuid,
    expected: Option<usize>,
    command: GroupCommand,
) -> Result<Versioned<GroupView>, ApiError> {
    let (committed, position) =
        run(state, principal, headers, group_id, expected, command, GroupView::of).await?;
    Ok(Versioned::ok(committed.version, committed.view).at(position))
}

/// Reads a group of the caller's tenant, 404 when there is none.
async fn read<R>(
    state: &AppState,
    principal: &Principal,
    group_id: Uuid,
    read: impl FnOnce(&Group, usize) -> R,
) -> Result<R, ApiError> {
    require(principal, READ)?;
    state
        .groups()
        .read(&principal.tenant, &group_id.to_string(), read)
        .await?
        .ok_or_else(|| ApiError::not_found(what(group_id)))
}

/// Refuses contacts that are not live contacts of the caller's tenant: a group member must be
/// someone the inbox can address.
/// Contact lookups one request runs at once.
const LOOKUPS_AT_ONCE: usize = 16;

async fn require_contacts(state: &AppState, principal: &Principal, ids: &[Uuid]) -> Result<(), ApiError> {
    // A few lookups at a time: a group of 1,024 members must not take 1,024 connections at once.
    let statuses: Vec<(Uuid, Option<ContactStatus>)> =
        futures::stream::iter(ids.iter().copied().map(|id| async move {
            let status = state
                .contacts()
                .read(&principal.tenant, &id.to_string(), |contact: &Contact, _| contact.status)
                .await?;
            Ok::<_, ApiError>((id, status))
        }))
        .buffered(LOOKUPS_AT_ONCE)
        .try_collect()
        .await?;
    for (id, status) in statuses {
        match status {
            None => return Err(ApiError::refused(format!("contact {id} names no contact of this tenant"))),
            Some(ContactStatus::Deleted) => {
                return Err(ApiError::refused(format!("contact {id} is deleted")))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn settings_from(body: Option<SettingsBody>) -> GroupSettings {
    let defaults = GroupSettings::default();
    let patch = GroupSettingsPatch::from(body.unwrap_or_default());
    GroupSettings {
        announce: patch.announce.unwrap_or(defaults.announce),
        restrict: patch.restrict.unwrap_or(defaults.restrict),
        join_approval_mode: patch.join_approval_mode.unwrap_or(defaults.join_approval_mode),
        member_add_mode: patch.member_add_mode.unwrap_or(defaults.member_add_mode),
    }
}

/// A new invite code: 16 random bytes as 22 url-safe characters, the length of WhatsApp's.
fn new_invite_code() -> String {
    URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes())
}

fn contact_ids(ids: Vec<Uuid>) -> Vec<ContactId> {
    ids.into_iter().map(ContactId).collect()
}

/// `POST /v1/groups`
#[utoipa::path(
    post,
    path = "/groups",
    tag = "groups",
    summary = "Create or register a group",
    request_body = CreateGroup,
    responses(
        (status = 201, description = "Created; `Location` names it, `ETag` is its version.", body = GroupView),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Json(body): Json<CreateGroup>,
) -> Result<Versioned<GroupView>, ApiError> {
    require(&principal, WRITE)?;
    let origin = origin(&principal, &headers)?;
    let participants = resolve_participants(&state, &principal, &headers, body.participants).await?;
    let mut named: Vec<Uuid> = vec![body.inbox_contact_id];
    named.extend(body.owner_id);
    named.extend(participants.iter().copied());
    named.sort_unstable();
    named.dedup();
    require_contacts(&state, &principal, &named).await?;
    let group_id = body.id.map_or_else(GroupId::new_v7, GroupId);
    let command = GroupCommand::CreateGroup {
        group_id,
        tenant_id: principal.tenant.clone(),
        group: NewGroup {
            inbox_id: body.inbox_id,
            inbox_contact_id: ContactId(body.inbox_contact_id),
            owner_id: body.owner_id.map(ContactId),
            provider_group_id: body.provider_group_id,
            subject: body.subject,
            description: body.description,
            participants: participants
                .into_iter()
                .map(|id| GroupMember { contact_id: ContactId(id), role: Role::Member })
                .collect(),
            settings: settings_from(body.settings),
            invite_code: body.invite_code,
        },
    };
    let committed = state
        .groups()
        .execute(&group_id.to_string(), command, Intent::Create, None, &origin, GroupView::of)
        .await
        .map_err(|e| command_failed(e, format!("group {group_id}")))?;
    let position = committed.position;
    Ok(Versioned::created(committed.version, format!("/v1/groups/{group_id}"), committed.view).at(position))
}

/// `GET /v1/groups/{id}`
#[utoipa::path(
    get,
    path = "/groups/{id}",
    tag = "groups",
    summary = "Read a group",
    description = "With `as_of` or `at_position`, the group as it stood then, folded from its own events; \
        `Colloquy-Position` names the last one.",
    params(("id" = Uuid, Path, description = "The group's id."), PointInTime),
    responses(
        (status = 200, description = "The group; `ETag` is its version.", body = GroupView)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(group_id): Path<Uuid>,
    Query(point): Query<PointInTime>,
) -> Result<Versioned<GroupView>, ApiError> {
    if let Some(until) = point.until()? {
        require(&principal, "groups:read")?;
        let found = state
            .groups()
            .read_at(&principal.tenant, &group_id.to_string(), until, |group: &Group, version| {
                (version, GroupView::of(group, version))
            })
            .await?;
        let ((version, view), position) = found.ok_or_else(|| not_yet(&format!("group {group_id}")))?;
        return Ok(Versioned::ok(version, view).at(Some(position)));
    }
    let (version, view) =
        read(&state, &principal, group_id, |group, version| (version, GroupView::of(group, version))).await?;
    Ok(Versioned::ok(version, view))
}

/// `PATCH /v1/groups/{id}`: subject, description, avatar.
#[utoipa::path(
    patch,
    path = "/groups/{id}",
    tag = "groups",
    summary = "Change subject, description or avatar",
    description = "Absent fields stay; `null` clears the description or avatar.",
    params(("id" = Uuid, Path, description = "The group's id.")),
    request_body = PatchGroup,
    responses(
        (status = 200, description = "The group as changed; `ETag` is its version.", body = GroupView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(group_id): Path<Uuid>,
    Json(body): Json<PatchGroup>,
) -> Result<Versioned<GroupView>, ApiError> {
    let command = GroupCommand::UpdateMetadata {
        patch: GroupMetadataPatch {
            subject: body.subject,
            description: body.description,
            avatar_url: body.avatar_url,
        },
        by: GroupActor::Inbox,
    };
    run_for_view(&state, &principal, &headers, group_id, expected, command).await
}

fn invite_view(group: &Group) -> GroupInviteView {
    GroupInviteView { invite_code: group.invite_code.clone(), invite_url: group.invite_url() }
}

/// `GET /v1/groups/{id}/invite`
#[utoipa::path(
    get,
    path = "/groups/{id}/invite",
    tag = "groups",
    summary = "Read the invite link",
    params(("id" = Uuid, Path, description = "The group's id.")),
    responses(
        (status = 200, description = "The current invite code and link.", body = GroupInviteView)
    )
)]
pub async fn invite(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(group_id): Path<Uuid>,
) -> Result<Versioned<GroupInviteView>, ApiError> {
    let (version, view) =
        read(&state, &principal, group_id, |group, version| (version, invite_view(group))).await?;
    Ok(Versioned::ok(version, view))
}

/// `POST /v1/groups/{id}/invite/revoke`: a new code replaces the current one, which stops
/// admitting anyone. The code is made here: the domain accepts any 1 to 64 url-safe characters,
/// so no provider format is imposed.
#[utoipa::path(
    post,
    path = "/groups/{id}/invite/revoke",
    tag = "groups",
    summary = "Replace the invite code",
    params(("id" = Uuid, Path, description = "The group's id.")),
    responses(
        (status = 200, description = "The new code and link; the old code stops working.", body = GroupInviteView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn revoke_invite(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(group_id): Path<Uuid>,
) -> Result<Versioned<GroupInviteView>, ApiError> {
    let command = GroupCommand::RevokeInvite { new_code: new_invite_code(), by: GroupActor::Inbox };
    let (committed, position) =
        run(&state, &principal, &headers, group_id, expected, command, |group, _| invite_view(group)).await?;
    Ok(Versioned::ok(committed.version, committed.view).at(position))
}

fn pending_requests(group: &Group) -> Vec<JoinRequestView> {
    let mut pending: Vec<JoinRequestView> = group
        .join_requests
        .iter()
        .map(|(contact_id, request)| JoinRequestView {
            contact_id: *contact_id,
            via: request.via,
            requested_at: request.requested_at,
        })
        .collect();
    pending.sort_by_key(|r| (r.requested_at, r.contact_id));
    pending
}

/// `GET /v1/groups/{id}/join-requests`: the pending requests, oldest first.
#[utoipa::path(
    get,
    path = "/groups/{id}/join-requests",
    tag = "groups",
    summary = "List pending join requests",
    params(("id" = Uuid, Path, description = "The group's id.")),
    responses(
        (status = 200, description = "The pending requests, oldest first.", body = Page<JoinRequestView>)
    )
)]
pub async fn join_requests(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(group_id): Path<Uuid>,
) -> Result<axum::Json<Page<JoinRequestView>>, ApiError> {
    let data = read(&state, &principal, group_id, |group, _| pending_requests(group)).await?;
    Ok(axum::Json(Page { data, next_cursor: None }))
}

/// `POST /v1/groups/{id}/join-requests`: `{"approve": [...]}` or `{"reject": [...]}`; answers
/// with the requests still pending.
#[utoipa::path(
    post,
    path = "/groups/{id}/join-requests",
    tag = "groups",
    summary = "Approve or reject join requests",
    description = "Send exactly one of `approve` and `reject`.",
    params(("id" = Uuid, Path, description = "The group's id.")),
    request_body = HandleJoinRequests,
    responses(
        (status = 200, description = "The requests still pending.", body = Page<JoinRequestView>),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn handle_join_requests(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(group_id): Path<Uuid>,
    Json(body): Json<HandleJoinRequests>,
) -> Result<Versioned<Page<JoinRequestView>>, ApiError> {
    let by = GroupActor::Inbox;
    let command = match (body.approve, body.reject) {
        (Some(ids), None) => GroupCommand::ApproveJoinRequests { contact_ids: contact_ids(ids), by },
        (None, Some(ids)) => GroupCommand::RejectJoinRequests { contact_ids: contact_ids(ids), by },
        // Both: the body breaks its schema (one field at most).
        (Some(_), Some(_)) => return Err(ApiError::bad_request("send exactly one of approve and reject")),
        // One, but null: well formed, and nothing to do.
        (None, None) => {
            return Err(ApiError::unacceptable_field("approve", "send exactly one of approve and reject"))
        }
    };
    let (committed, position) =
        run(&state, &principal, &headers, group_id, expected, command, |group, _| pending_requests(group))
            .await?;
    Ok(Versioned::ok(committed.version, Page { data: committed.view, next_cursor: None }).at(position))
}

/// `PATCH /v1/groups/{id}/settings`
#[utoipa::path(
    patch,
    path = "/groups/{id}/settings",
    tag = "groups",
    summary = "Change settings",
    description = "Only the settings named change; unknown names are refused.",
    params(("id" = Uuid, Path, description = "The group's id.")),
    request_body = SettingsBody,
    responses(
        (status = 200, description = "The group as changed; `ETag` is its version.", body = GroupView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn change_settings(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(group_id): Path<Uuid>,
    Json(body): Json<SettingsBody>,
) -> Result<Versioned<GroupView>, ApiError> {
    let command = GroupCommand::ChangeSettings { patch: body.into(), by: GroupActor::Inbox };
    run_for_view(&state, &principal, &headers, group_id, expected, command).await
}

/// `POST /v1/groups/{id}/leave`: the inbox's own number leaves; the group is marked left and
/// refuses further management.
#[utoipa::path(
    post,
    path = "/groups/{id}/leave",
    tag = "groups",
    summary = "Leave as the inbox's own number",
    description = "The group is marked left and refuses later commands; its history stays readable.",
    params(("id" = Uuid, Path, description = "The group's id.")),
    responses(
        (status = 200, description = "The group as changed; `ETag` is its version.", body = GroupView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn leave(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(group_id): Path<Uuid>,
) -> Result<Versioned<GroupView>, ApiError> {
    let command = GroupCommand::LeaveGroup { by: GroupActor::Inbox };
    run_for_view(&state, &principal, &headers, group_id, expected, command).await
}

/// `POST /v1/groups/{id}/sync`: 202 `{"status": "queued"}`, or 202 `{"status": "skipped", ...}`
/// within the cooldown of the last accepted request unless `force`.
#[utoipa::path(
    post,
    path = "/groups/{id}/sync",
    tag = "groups",
    summary = "Request a sync with the provider",
    params(("id" = Uuid, Path, description = "The group's id.")),
    request_body = RequestSync,
    responses(
        (status = 202, description = "`queued`, or `skipped` within the 15-minute cooldown of the last accepted request (unless `force`).", body = SyncAnswer),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn sync(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Path(group_id): Path<Uuid>,
    Json(body): Json<RequestSync>,
) -> Result<Response, ApiError> {
    let command = GroupCommand::RequestSync { force: body.force };
    let (committed, position) =
        run(&state, &principal, &headers, group_id, None, command, |group, _| group.last_sync_requested_at)
            .await?;
    // The command records nothing when it skips, and the last request's time is then the one
    // that caused the skip, so the answer is exact without a second clock read.
    let answer = match committed.view {
        Some(last) if committed.events.is_empty() => SyncAnswer::Skipped {
            reason: format!("cooldown: a sync was requested at {}", last.to_rfc3339()),
            last_requested_at: last,
            next_due_at: last + SYNC_COOLDOWN,
        },
        _ => SyncAnswer::Queued,
    };
    Ok(Versioned {
        status: StatusCode::ACCEPTED,
        version: committed.version,
        location: None,
        position,
        body: answer,
    }
    .into_response())
}

/// `GET /v1/contacts/{id}/groups`: the groups the contact is a member of now, from the
/// `group_members` read model (pass a command's `Colloquy-Position` as `min_position` to wait for it).
#[utoipa::path(
    get,
    path = "/contacts/{id}/groups",
    tag = "groups",
    summary = "List the groups a contact is in",
    params(("id" = Uuid, Path, description = "The contact's id."), PageParams),
    responses(
        (status = 200, description = "A page of the contact's memberships, by group id.", body = Page<ContactGroupView>)
    )
)]
pub async fn contact_groups(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(contact_id): Path<Uuid>,
    Query(page): Query<PageParams>,
) -> Result<axum::Json<Page<ContactGroupView>>, ApiError> {
    require(&principal, READ)?;
    let limit = page.limit()?;
    let offset = page.after("grp")?;
    let exists = state.contacts().read(&principal.tenant, &contact_id.to_string(), |_, _| ()).await?;
    if exists.is_none() {
        return Err(ApiError::not_found(format!("contact {contact_id}")));
    }
    state.await_projection(group_members::NAME, page.min_position).await?;
    let mut rows = group_members::groups_of(
        state.store(),
        principal.tenant.as_str(),
        &contact_id.to_string(),
        offset,
        limit + 1,
    )
    .await?;
    let next_cursor = (rows.len() > limit).then(|| cursor("grp", offset + limit as u64));
    rows.truncate(limit);
    let data = rows
        .into_iter()
        .map(|m| ContactGroupView { group_id: m.group_id, role: m.role, since: m.since })
        .collect();
    Ok(axum::Json(Page { data, next_cursor }))
}

/// `GET /v1/groups/{id}/events`: the group's events with their metadata, in order.
#[utoipa::path(
    get,
    path = "/groups/{id}/events",
    tag = "groups",
    summary = "Read a group's history",
    params(("id" = Uuid, Path, description = "The group's id."), PageParams),
    responses(
        (status = 200, description = "A page of the group's events with their metadata, in order.", body = Page<EventView>)
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(group_id): Path<Uuid>,
    Query(page): Query<PageParams>,
) -> Result<axum::Json<Page<EventView>>, ApiError> {
    require(&principal, READ)?;
    stream_events(&state, &principal, "group", group_id, &page).await.map(axum::Json)
}
