//! `/v1/groups/{id}/members`: the members and their roles, now or `as_of` any past moment (a
//! fold of the group's own stream, `Group::apply_as_of`), adding, promoting and removing them.

use super::*;

/// Body of `POST /v1/groups/{id}/members`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"contact_ids": ["0192f3c4-0000-7000-8000-000000000003"]}))]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    /// Contact ids or E.164 numbers, as in `POST /v1/groups`'s `participants`.
    #[serde(deserialize_with = "crate::bounded::at_most::<_, _, { colloquy_domain::group::MAX_MEMBERS }>")]
    #[schema(max_items = 1024)]
    contact_ids: Vec<Participant>,
}

/// The roles a member can be given through the API; the owner's role is not given, only held.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GivenRole {
    /// Promote to admin.
    Admin,
    /// Demote to a plain member.
    Member,
}

/// Body of `PATCH /v1/groups/{id}/members/{contact_id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"role": "admin"}))]
#[serde(deny_unknown_fields)]
pub struct ChangeRole {
    role: GivenRole,
}

/// Query of `GET /v1/groups/{id}/members`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MembersQuery {
    /// Members per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Answer who was a member at this moment (RFC 3339) instead of now.
    as_of: Option<Instant>,
}

/// The members of `group` in list order: the inbox's own member first, then by role (owner,
/// admins, members), then by contact id, so pages are stable while the group does not change.
fn ordered_members(group: &Group) -> Vec<GroupMemberView> {
    let mut members: Vec<GroupMemberView> = group
        .members
        .iter()
        .map(|(contact_id, role)| GroupMemberView {
            contact_id: *contact_id,
            role: *role,
            is_inbox: Some(*contact_id) == group.inbox_contact_id,
        })
        .collect();
    members.sort_by_key(|m| (!m.is_inbox, Reverse(m.role), m.contact_id));
    members
}

/// The group as it stood at `as_of`: the prefix of its stream that had happened by then. `None`
/// when the group did not exist yet (or is not the tenant's).
async fn group_as_of(
    state: &AppState,
    principal: &Principal,
    group_id: Uuid,
    as_of: DateTime<Utc>,
) -> Result<Option<Group>, ApiError> {
    const BATCH: i64 = 1000;
    let mut group = Group::default();
    let mut after = 0;
    loop {
        let events = state
            .store()
            .stream_page(&principal.tenant, "group", &group_id.to_string(), after, BATCH)
            .await?;
        let count = events.len();
        for stored in events {
            after = stored.sequence;
            let event: GroupEvent = stored.decode().map_err(|e| ApiError::internal(&e))?;
            if !group.apply_as_of(event, as_of) {
                return Ok(group.id.is_some().then_some(group));
            }
        }
        if count < BATCH as usize {
            return Ok(group.id.is_some().then_some(group));
        }
    }
}

/// `GET /v1/groups/{id}/members`: paged, the inbox's own member first, then admins; with
/// `as_of`, the members and roles at that moment.
#[utoipa::path(
    get,
    path = "/groups/{id}/members",
    tag = "groups",
    summary = "List members",
    description = "With `as_of`, the members and roles at that moment, folded from the group's own history (422 before the group existed).",
    params(("id" = Uuid, Path, description = "The group's id."), MembersQuery),
    responses(
        (status = 200, description = "A page of members: the inbox's own first, then admins, then members.", body = GroupMembersPage),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn members(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(group_id): Path<Uuid>,
    Query(query): Query<MembersQuery>,
) -> Result<axum::Json<GroupMembersPage>, ApiError> {
    let paging = PageParams { limit: query.limit, cursor: query.cursor, min_position: None };
    let limit = paging.limit()?;
    let offset = usize::try_from(paging.after("members")?)
        .map_err(|_| ApiError::invalid_field("cursor", "is out of range"))?;
    let members = match query.as_of.map(DateTime::from) {
        None => read(&state, &principal, group_id, |group, _| ordered_members(group)).await?,
        Some(as_of) => {
            // Checks the scope and that the group is the tenant's before reading its history.
            let created_at = read(&state, &principal, group_id, |group, _| group.created_at).await?;
            if created_at.is_some_and(|created| as_of < created) {
                return Err(ApiError::refused(format!(
                    "group {group_id} did not exist at {as_of}; it was created at {}",
                    created_at.map(|c| c.to_rfc3339()).unwrap_or_default()
                )));
            }
            group_as_of(&state, &principal, group_id, as_of)
                .await?
                .map(|g| ordered_members(&g))
                .unwrap_or_default()
        }
    };
    let member_count = members.len();
    let data: Vec<GroupMemberView> = members.into_iter().skip(offset).take(limit).collect();
    let next = offset + data.len();
    let next_cursor = (next < member_count).then(|| cursor("members", next as u64));
    Ok(axum::Json(GroupMembersPage { as_of: query.as_of.map(Into::into), member_count, data, next_cursor }))
}

/// `POST /v1/groups/{id}/members`: adds contacts; those already members are skipped.
#[utoipa::path(
    post,
    path = "/groups/{id}/members",
    tag = "groups",
    summary = "Add members",
    description = "Contacts already members are skipped.",
    params(("id" = Uuid, Path, description = "The group's id.")),
    request_body = AddMembers,
    responses(
        (status = 200, description = "The group as changed; `ETag` is its version.", body = GroupView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn add_members(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path(group_id): Path<Uuid>,
    Json(body): Json<AddMembers>,
) -> Result<Versioned<GroupView>, ApiError> {
    require(&principal, WRITE)?;
    let added = resolve_participants(&state, &principal, &headers, body.contact_ids).await?;
    require_contacts(&state, &principal, &added).await?;
    let command = GroupCommand::AddMembers { contact_ids: contact_ids(added), by: GroupActor::Inbox };
    run_for_view(&state, &principal, &headers, group_id, expected, command).await
}

/// `PATCH /v1/groups/{id}/members/{contact_id}`: `{"role": "admin"|"member"}`.
#[utoipa::path(
    patch,
    path = "/groups/{id}/members/{contact_id}",
    tag = "groups",
    summary = "Promote or demote a member",
    params(("id" = Uuid, Path, description = "The group's id."), ("contact_id" = Uuid, Path, description = "The member's contact id.")),
    request_body = ChangeRole,
    responses(
        (status = 200, description = "The member with the new role; `ETag` is the group's version.", body = GroupMemberView),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn change_role(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path((group_id, contact_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<ChangeRole>,
) -> Result<Versioned<GroupMemberView>, ApiError> {
    let contact_id = ContactId(contact_id);
    let command = match body.role {
        GivenRole::Admin => GroupCommand::PromoteMember { contact_id, by: GroupActor::Inbox },
        GivenRole::Member => GroupCommand::DemoteMember { contact_id, by: GroupActor::Inbox },
    };
    let (committed, position) = run(&state, &principal, &headers, group_id, expected, command, |group, _| {
        group.role_of(contact_id).map(|role| GroupMemberView {
            contact_id,
            role,
            is_inbox: Some(contact_id) == group.inbox_contact_id,
        })
    })
    .await?;
    let member = committed.view.ok_or_else(|| ApiError::not_found(format!("member {contact_id}")))?;
    Ok(Versioned::ok(committed.version, member).at(position))
}

/// A 204 with the group's new version.
fn no_content(version: usize, position: Option<i64>) -> Response {
    let mut response = (StatusCode::NO_CONTENT, [(axum::http::header::ETAG, etag(version))]).into_response();
    if let Some(position) = position {
        response.headers_mut().insert(POSITION_HEADER, position.into());
    }
    response
}

/// `DELETE /v1/groups/{id}/members/{contact_id}`: 204.
#[utoipa::path(
    delete,
    path = "/groups/{id}/members/{contact_id}",
    tag = "groups",
    summary = "Remove a member",
    params(("id" = Uuid, Path, description = "The group's id."), ("contact_id" = Uuid, Path, description = "The member's contact id.")),
    responses(
        (status = 204, description = "Removed; `ETag` is the group's version."),
        (status = 422, response = crate::openapi::Unprocessable)
    )
)]
pub async fn remove_member(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    IfMatch(expected): IfMatch,
    Path((group_id, contact_id)): Path<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    let command = GroupCommand::RemoveMember { contact_id: ContactId(contact_id), by: GroupActor::Inbox };
    let (committed, position) =
        run(&state, &principal, &headers, group_id, expected, command, |_, _| ()).await?;
    Ok(no_content(committed.version, position))
}
