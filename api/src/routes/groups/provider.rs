//! `/v1/groups/{id}/provider/*`: what the messaging provider reports of a group (a join through
//! the invite link, activity, its full view of the group), recorded as the provider saw it.

use super::*;

/// Body of `POST /v1/groups/{id}/provider/join`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"participant": "+5511999990001", "invite_code": "AbC123dEf456GhI789jKl0"}))]
#[serde(deny_unknown_fields)]
pub struct ReportJoin {
    /// Who joins: a contact id or an E.164 number.
    participant: Participant,
    /// The invite code they used; absent, a request to join that waits for an admin.
    invite_code: Option<String>,
}

/// Body of `POST /v1/groups/{id}/provider/activity`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"at": "2026-11-23T14:05:00Z"}))]
#[serde(deny_unknown_fields)]
pub struct ReportActivity {
    /// When the provider saw the activity; a time ahead of the server's is taken as now.
    at: Instant,
}

/// One participant of `POST /v1/groups/{id}/provider/view`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewParticipant {
    /// A contact id or an E.164 number.
    id: Participant,
    /// Their role; a plain member when absent.
    #[serde(default = "member_role")]
    role: Role,
}

fn member_role() -> Role {
    Role::Member
}

/// Body of `POST /v1/groups/{id}/provider/view`: the provider's full view of the group.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"subject": "Book club", "description": null, "settings": {"announce": true},
    "participants": [{"id": "+5511999990001", "role": "superadmin"}, {"id": "0192f3c4-0000-7000-8000-000000000002"}]}))]
#[serde(deny_unknown_fields)]
pub struct ReportView {
    subject: String,
    description: Option<String>,
    /// Every setting as the provider has it; an absent one is taken as its default.
    settings: Option<SettingsBody>,
    /// Every participant, the inbox's own number included while it is a member.
    #[serde(deserialize_with = "crate::bounded::at_most::<_, _, { colloquy_domain::group::MAX_MEMBERS }>")]
    #[schema(max_items = 1024)]
    participants: Vec<ViewParticipant>,
    /// The current invite code, when the provider reported it; absent keeps the known one.
    invite_code: Option<String>,
}

/// `POST /v1/groups/{id}/provider/join`: the provider reports a contact joining, with the invite
/// code (a member at once, or a pending request under `join_approval_mode`) or without one (a
/// request that waits for an admin).
#[utoipa::path(
    post,
    path = "/groups/{id}/provider/join",
    tag = "groups",
    summary = "Report a join or join request from the provider",
    params(("id" = Uuid, Path, description = "The group's id.")),
    request_body = ReportJoin,
    responses(
        (status = 200, description = "The group as changed; `ETag` is its version.", body = GroupView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn report_join(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(group_id): Path<Uuid>,
    Json(body): Json<ReportJoin>,
) -> Result<Versioned<GroupView>, ApiError> {
    require(&principal, WRITE)?;
    let joining = resolve_participants(&state, &principal, &headers, vec![body.participant]).await?;
    require_contacts(&state, &principal, &joining).await?;
    let contact_id = ContactId(joining[0]);
    let command = match body.invite_code {
        Some(code) => GroupCommand::JoinViaInvite { contact_id, code },
        None => GroupCommand::RequestJoin { contact_id },
    };
    run_for_view(&state, &principal, &headers, group_id, expected, command).await
}

/// `POST /v1/groups/{id}/provider/activity`: the provider saw activity in the group (its messages
/// not processed one by one); moves the group's last activity.
#[utoipa::path(
    post,
    path = "/groups/{id}/provider/activity",
    tag = "groups",
    summary = "Report group activity from the provider",
    params(("id" = Uuid, Path, description = "The group's id.")),
    request_body = ReportActivity,
    responses(
        (status = 200, description = "The group; `ETag` is its version.", body = GroupView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn report_activity(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Path(group_id): Path<Uuid>,
    Json(body): Json<ReportActivity>,
) -> Result<Versioned<GroupView>, ApiError> {
    let command = GroupCommand::RecordActivity { at: body.at.into() };
    run_for_view(&state, &principal, &headers, group_id, None, command).await
}

/// `POST /v1/groups/{id}/provider/view`: the provider's full view of the group (what a sync
/// fetched), reconciled into the fewest events; the same view twice records nothing.
#[utoipa::path(
    post,
    path = "/groups/{id}/provider/view",
    tag = "groups",
    summary = "Reconcile the group with the provider's view",
    description = "Subject, description, settings, invite code and participants with roles become the events that \
        bring the group to this view, recorded as the provider's doing; nothing when it already matches. \
        Participants named by number are matched to (or become) contacts.",
    params(("id" = Uuid, Path, description = "The group's id.")),
    request_body = ReportView,
    responses(
        (status = 200, description = "The group as reconciled; `ETag` is its version.", body = GroupView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn report_view(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(group_id): Path<Uuid>,
    Json(body): Json<ReportView>,
) -> Result<Versioned<GroupView>, ApiError> {
    require(&principal, WRITE)?;
    let roles: Vec<Role> = body.participants.iter().map(|p| p.role).collect();
    let ids = resolve_participants(
        &state,
        &principal,
        &headers,
        body.participants.into_iter().map(|p| p.id).collect(),
    )
    .await?;
    require_contacts(&state, &principal, &ids).await?;
    let view = ProviderView {
        subject: body.subject,
        description: body.description,
        settings: settings_from(body.settings),
        participants: ids
            .into_iter()
            .zip(roles)
            .map(|(id, role)| GroupMember { contact_id: ContactId(id), role })
            .collect(),
        invite_code: body.invite_code,
    };
    run_for_view(&state, &principal, &headers, group_id, expected, GroupCommand::SyncGroup { view }).await
}
