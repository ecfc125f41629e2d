//! The rules a group's commands are decided by: each command's decision, the checks they share,
//! and the errors that name the rule a refusal broke.

use super::*;

/// Why a Group refused a command.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GroupError {
    /// Create on an id that is taken.
    #[error("group {0} already exists")]
    AlreadyExists(GroupId),
    /// A command other than create on an id with no group.
    #[error("group does not exist")]
    NotFound,
    /// Any command after the inbox's own member left or was removed.
    #[error("the inbox has left group {0}; it can no longer be managed")]
    Left(GroupId),
    /// The inbox acted where only admins may, and is not one.
    #[error("only admins may {0}, and the inbox is not an admin of this group")]
    AdminsOnly(AdminAction),
    /// The owner was to be removed or demoted.
    #[error("contact {0} owns the group and can be neither removed nor demoted")]
    OwnerImmune(ContactId),
    /// The command names a contact that is not a member.
    #[error("contact {0} is not a member of this group")]
    NotAMember(ContactId),
    /// The command would take the group past [`MAX_MEMBERS`].
    #[error("the group has {members} members and can take {free} more (at most {MAX_MEMBERS})")]
    Full {
        /// Members now.
        members: usize,
        /// Places left.
        free: usize,
    },
    /// A join with a code that is not the current invite code (revoked, or never issued).
    #[error("the invite code is not this group's current one")]
    InvalidInviteCode,
    /// Approve or reject of a contact with no pending join request.
    #[error("contact {0} has no pending join request")]
    NoJoinRequest(ContactId),
    /// A field breaks its rule.
    #[error("invalid {0}")]
    Invalid(#[from] FieldError),
}

/// Why the inbox may not send to the group now; see [`Group::can_inbox_send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendRefusal {
    /// There is no such group.
    #[error("group does not exist")]
    NotFound,
    /// The inbox's own member left or was removed.
    #[error("the inbox has left this group")]
    Left,
    /// `announce` is on and the inbox is not an admin.
    #[error("only admins may send messages in this group (announce is on), and the inbox is not an admin")]
    AnnounceOnly,
}

/// Why a sync request is skipped; see [`Group::sync_due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("skipped: cooldown; a sync was requested at {last_requested_at}, the next is due at {next_due_at}")]
pub struct SyncSkipped {
    /// When the last accepted sync request was made.
    pub last_requested_at: DateTime<Utc>,
    /// From when a request is accepted without `force`.
    pub next_due_at: DateTime<Utc>,
}

/// Whether a sync asked for at `now` runs, given the last accepted request: always with `force`,
/// otherwise only [`SYNC_COOLDOWN`] after it. A free function so a read model holding
/// `last_sync_requested_at` can answer the same way as [`Group::sync_due`].
pub fn sync_due(
    last_requested_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    force: bool,
) -> Result<(), SyncSkipped> {
    match last_requested_at {
        Some(last) if !force && now < last + SYNC_COOLDOWN => {
            Err(SyncSkipped { last_requested_at: last, next_due_at: last + SYNC_COOLDOWN })
        }
        _ => Ok(()),
    }
}

pub(super) const INVITE_URL_PREFIX: &str = "https://chat.whatsapp.com/";

pub(super) fn subject(value: &str) -> Result<String, FieldError> {
    validate::text("subject", value, MAX_SUBJECT, true)
}

pub(super) fn description(value: Option<&str>) -> Result<Option<String>, FieldError> {
    validate::optional_text("description", value, MAX_DESCRIPTION)
}

/// An avatar url: http or https with a host, no white space or control characters.
pub(super) fn avatar_url(value: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let refuse = |reason: &str| Err(FieldError::new("avatar_url", reason));
    if value.chars().count() > MAX_AVATAR_URL {
        return refuse(&format!("must be at most {MAX_AVATAR_URL} characters"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("must not contain spaces or control characters");
    }
    let lower = value.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    match rest {
        None => refuse("must be an http or https url"),
        Some(rest) if rest.split(['/', '?', '#']).next().is_none_or(str::is_empty) => {
            refuse("must name a host")
        }
        Some(_) => Ok(Some(value.to_owned())),
    }
}

/// An invite code: 1 to 64 ASCII letters, digits, `-` or `_` (WhatsApp's are 22 characters).
pub(super) fn invite_code(field: &str, value: &str) -> Result<String, FieldError> {
    let value = value.trim();
    let valid = (1..=64).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(value.to_owned())
    } else {
        Err(FieldError::new(field, "must be 1 to 64 letters, digits, '-' or '_'"))
    }
}

pub(super) fn not_empty<T>(field: &str, values: &[T]) -> Result<(), FieldError> {
    if values.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    Ok(())
}

/// The contacts in `contact_ids` once each, in their first order.
pub(super) fn distinct(contact_ids: Vec<ContactId>) -> Vec<ContactId> {
    let mut seen = BTreeSet::new();
    contact_ids.into_iter().filter(|id| seen.insert(*id)).collect()
}

impl Group {
    /// Whether `contact` is a member now.
    pub fn is_member(&self, contact: ContactId) -> bool {
        self.members.contains_key(&contact)
    }

    /// The role `contact` holds now, if a member.
    pub fn role_of(&self, contact: ContactId) -> Option<Role> {
        self.members.get(&contact).copied()
    }

    /// The role the inbox's own member holds; `None` once the group is left.
    pub fn inbox_role(&self) -> Option<Role> {
        self.inbox_contact_id.and_then(|inbox| self.role_of(inbox))
    }

    /// The owner (superadmin), if one is a member.
    pub fn owner(&self) -> Option<ContactId> {
        self.members.iter().find(|(_, role)| **role == Role::Superadmin).map(|(id, _)| *id)
    }

    /// How many members the group has.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether the inbox may send a message now: refused once the group is left, and while
    /// `announce` is on unless the inbox is an admin.
    pub fn can_inbox_send(&self) -> Result<(), SendRefusal> {
        if self.id.is_none() {
            return Err(SendRefusal::NotFound);
        }
        let role = self.inbox_role().filter(|_| !self.left).ok_or(SendRefusal::Left)?;
        if self.settings.announce && !role.is_admin() {
            return Err(SendRefusal::AnnounceOnly);
        }
        Ok(())
    }

    /// The contacts `@everyone` names now: every member but the inbox's own, in id order.
    pub fn expand_everyone(&self) -> Vec<ContactId> {
        self.members.keys().copied().filter(|id| Some(*id) != self.inbox_contact_id).collect()
    }

    /// The invite link for the current code.
    pub fn invite_url(&self) -> Option<String> {
        self.invite_code.as_ref().map(|code| format!("{INVITE_URL_PREFIX}{code}"))
    }

    /// Whether a sync asked for at `now` would run; the API calls it to answer "skipped" with the
    /// reason. [`GroupCommand::RequestSync`] applies the same rule.
    pub fn sync_due(&self, now: DateTime<Utc>, force: bool) -> Result<(), SyncSkipped> {
        sync_due(self.last_sync_requested_at, now, force)
    }

    /// The group's id, refusing when it does not exist or the inbox has left it.
    pub(super) fn require_live(&self) -> Result<GroupId, GroupError> {
        let id = self.id.ok_or(GroupError::NotFound)?;
        if self.left {
            return Err(GroupError::Left(id));
        }
        Ok(id)
    }

    /// Refuses the inbox an admin-only action when it is not an admin. Provider reports pass:
    /// they describe what WhatsApp already allowed.
    pub(super) fn require_admin(&self, by: GroupActor, action: AdminAction) -> Result<(), GroupError> {
        match by {
            GroupActor::Provider { .. } => Ok(()),
            GroupActor::Inbox if self.inbox_role().is_some_and(Role::is_admin) => Ok(()),
            GroupActor::Inbox => Err(GroupError::AdminsOnly(action)),
        }
    }

    pub(super) fn require_member(&self, contact: ContactId) -> Result<Role, GroupError> {
        self.role_of(contact).ok_or(GroupError::NotAMember(contact))
    }

    pub(super) fn require_room(&self, more: usize) -> Result<(), GroupError> {
        let members = self.members.len();
        if members + more > MAX_MEMBERS {
            return Err(GroupError::Full { members, free: MAX_MEMBERS.saturating_sub(members) });
        }
        Ok(())
    }

    /// The events that make `contact` a member; a pending join request is answered first.
    pub(super) fn admit(
        &self,
        contact_id: ContactId,
        role: Role,
        via: AddedVia,
        by: GroupActor,
        now: DateTime<Utc>,
    ) -> Vec<GroupEvent> {
        let mut events = Vec::with_capacity(2);
        let via = if self.join_requests.contains_key(&contact_id) {
            events.push(GroupEvent::JoinRequestApproved { contact_id, by, approved_at: now });
            AddedVia::JoinRequest
        } else {
            via
        };
        events.push(GroupEvent::MemberAdded { contact_id, role, via, by, added_at: now });
        events
    }

    /// The events that take `contact` out; the inbox's own member going marks the group left.
    pub(super) fn depart(
        &self,
        contact_id: ContactId,
        removed_by: Option<GroupActor>,
        now: DateTime<Utc>,
    ) -> Vec<GroupEvent> {
        let (event, because) = match removed_by {
            Some(by) => (GroupEvent::MemberRemoved { contact_id, by, removed_at: now }, LeftBecause::Removed),
            None => (GroupEvent::MemberLeft { contact_id, left_at: now }, LeftBecause::Left),
        };
        let mut events = vec![event];
        if Some(contact_id) == self.inbox_contact_id {
            events.push(GroupEvent::GroupLeft { because, left_at: now });
        }
        events
    }

    pub(super) fn role_change(
        contact_id: ContactId,
        from: Role,
        to: Role,
        by: GroupActor,
        now: DateTime<Utc>,
    ) -> Option<GroupEvent> {
        match from.cmp(&to) {
            std::cmp::Ordering::Less => {
                Some(GroupEvent::MemberPromoted { contact_id, from, to, by, promoted_at: now })
            }
            std::cmp::Ordering::Greater => {
                Some(GroupEvent::MemberDemoted { contact_id, from, to, by, demoted_at: now })
            }
            std::cmp::Ordering::Equal => None,
        }
    }

    pub(super) fn create(
        &self,
        group_id: GroupId,
        tenant_id: TenantId,
        group: NewGroup,
        now: DateTime<Utc>,
    ) -> Result<GroupEvent, GroupError> {
        if let Some(existing) = self.id {
            return Err(GroupError::AlreadyExists(existing));
        }
        let owner = group.owner_id.unwrap_or(group.inbox_contact_id);
        let mut members = vec![GroupMember { contact_id: owner, role: Role::Superadmin }];
        for participant in group.participants {
            if participant.role == Role::Superadmin {
                return Err(FieldError::new("participants", "only the owner is superadmin").into());
            }
            // A contact listed twice (two numbers resolving to one contact) keeps its higher role.
            match members.iter_mut().find(|m| m.contact_id == participant.contact_id) {
                Some(member) => member.role = member.role.max(participant.role),
                None => members.push(participant),
            }
        }
        if !members.iter().any(|m| m.contact_id == group.inbox_contact_id) {
            members.push(GroupMember { contact_id: group.inbox_contact_id, role: Role::Member });
        }
        if members.len() > MAX_MEMBERS {
            return Err(FieldError::new(
                "participants",
                format!("a group has at most {MAX_MEMBERS} members"),
            )
            .into());
        }
        Ok(GroupEvent::GroupCreated {
            group_id,
            tenant_id,
            inbox_id: validate::external_id("inbox_id", &group.inbox_id)?,
            inbox_contact_id: group.inbox_contact_id,
            provider_group_id: group
                .provider_group_id
                .map(|id| validate::external_id("provider_group_id", &id))
                .transpose()?,
            subject: subject(&group.subject)?,
            description: description(group.description.as_deref())?,
            members,
            settings: group.settings,
            invite_code: group.invite_code.map(|code| invite_code("invite_code", &code)).transpose()?,
            created_at: now,
        })
    }

    pub(super) fn add_members(
        &self,
        contact_ids: Vec<ContactId>,
        by: GroupActor,
        now: DateTime<Utc>,
    ) -> Result<Vec<GroupEvent>, GroupError> {
        not_empty("contact_ids", &contact_ids)?;
        if self.settings.member_add_mode == MemberAddMode::AdminsOnly {
            self.require_admin(by, AdminAction::AddMembers)?;
        }
        let new: Vec<ContactId> =
            distinct(contact_ids).into_iter().filter(|id| !self.is_member(*id)).collect();
        self.require_room(new.len())?;
        Ok(new.into_iter().flat_map(|id| self.admit(id, Role::Member, AddedVia::Added, by, now)).collect())
    }

    pub(super) fn remove_member(
        &self,
        contact_id: ContactId,
        by: GroupActor,
        now: DateTime<Utc>,
    ) -> Result<Vec<GroupEvent>, GroupError> {
        self.require_admin(by, AdminAction::RemoveMembers)?;
        let role = self.require_member(contact_id)?;
        if role == Role::Superadmin && by == GroupActor::Inbox {
            return Err(GroupError::OwnerImmune(contact_id));
        }
        Ok(self.depart(contact_id, Some(by), now))
    }

    pub(super) fn change_role(
        &self,
        contact_id: ContactId,
        to: Role,
        by: GroupActor,
        now: DateTime<Utc>,
    ) -> Result<Option<GroupEvent>, GroupError> {
        self.require_admin(by, AdminAction::ChangeRoles)?;
        let from = self.require_member(contact_id)?;
        if from == Role::Superadmin && by == GroupActor::Inbox {
            return Err(GroupError::OwnerImmune(contact_id));
        }
        // Promoting an admin or the owner changes nothing; only a report can demote the owner.
        if to == Role::Admin && from.is_admin() {
            return Ok(None);
        }
        Ok(Self::role_change(contact_id, from, to, by, now))
    }

    pub(super) fn leave(&self, by: GroupActor, now: DateTime<Utc>) -> Result<Vec<GroupEvent>, GroupError> {
        let contact_id = match by {
            GroupActor::Inbox => self.inbox_contact_id.ok_or(GroupError::NotFound)?,
            GroupActor::Provider { author: Some(author) } => author,
            GroupActor::Provider { author: None } => {
                return Err(FieldError::new("by", "a reported leave must name who left").into())
            }
        };
        self.require_member(contact_id)?;
        Ok(self.depart(contact_id, None, now))
    }

    pub(super) fn update_metadata(
        &self,
        patch: GroupMetadataPatch,
        by: GroupActor,
        now: DateTime<Utc>,
    ) -> Result<Vec<GroupEvent>, GroupError> {
        if self.settings.restrict {
            self.require_admin(by, AdminAction::EditInfo)?;
        }
        let mut events = Vec::new();
        if let Some(new_subject) = patch.subject {
            let new_subject = subject(&new_subject)?;
            if new_subject != self.subject {
                events.push(GroupEvent::GroupSubjectChanged { subject: new_subject, by, changed_at: now });
            }
        }
        if let Some(new_description) = patch.description {
            let new_description = description(new_description.as_deref())?;
            if new_description != self.description {
                events.push(GroupEvent::GroupDescriptionChanged {
                    description: new_description,
                    by,
                    changed_at: now,
                });
            }
        }
        if let Some(new_avatar) = patch.avatar_url {
            let new_avatar = avatar_url(new_avatar.as_deref())?;
            if new_avatar != self.avatar_url {
                events.push(GroupEvent::GroupAvatarChanged { avatar_url: new_avatar, by, changed_at: now });
            }
        }
        Ok(events)
    }

    pub(super) fn revoke_invite(
        &self,
        new_code: &str,
        by: GroupActor,
        now: DateTime<Utc>,
    ) -> Result<GroupEvent, GroupError> {
        self.require_admin(by, AdminAction::RevokeInvite)?;
        let new_code = invite_code("new_code", new_code)?;
        if self.invite_code.as_deref() == Some(new_code.as_str()) {
            return Err(FieldError::new("new_code", "must differ from the current invite code").into());
        }
        Ok(GroupEvent::InviteCodeRevoked {
            previous_code: self.invite_code.clone(),
            invite_code: new_code,
            by,
            revoked_at: now,
        })
    }

    pub(super) fn join_via_invite(
        &self,
        contact_id: ContactId,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<GroupEvent>, GroupError> {
        if self.invite_code.as_deref() != Some(code.trim()) {
            return Err(GroupError::InvalidInviteCode);
        }
        if self.is_member(contact_id) {
            return Ok(vec![]);
        }
        if self.settings.join_approval_mode {
            if self.join_requests.contains_key(&contact_id) {
                return Ok(vec![]);
            }
            return Ok(vec![GroupEvent::JoinRequested {
                contact_id,
                via: RequestVia::InviteLink,
                requested_at: now,
            }]);
        }
        self.require_room(1)?;
        let by = GroupActor::Provider { author: Some(contact_id) };
        Ok(self.admit(contact_id, Role::Member, AddedVia::InviteLink, by, now))
    }

    /// The distinct contacts of a bulk approve or reject, refusing the whole batch when one has no
    /// pending request: a partial answer would hide which requests were not handled.
    pub(super) fn pending_requests(&self, contact_ids: Vec<ContactId>) -> Result<Vec<ContactId>, GroupError> {
        not_empty("contact_ids", &contact_ids)?;
        let contact_ids = distinct(contact_ids);
        if let Some(unknown) = contact_ids.iter().find(|id| !self.join_requests.contains_key(id)) {
            return Err(GroupError::NoJoinRequest(*unknown));
        }
        Ok(contact_ids)
    }

    pub(super) fn approve_join_requests(
        &self,
        contact_ids: Vec<ContactId>,
        by: GroupActor,
        now: DateTime<Utc>,
    ) -> Result<Vec<GroupEvent>, GroupError> {
        self.require_admin(by, AdminAction::HandleJoinRequests)?;
        let contact_ids = self.pending_requests(contact_ids)?;
        self.require_room(contact_ids.len())?;
        Ok(contact_ids
            .into_iter()
            .flat_map(|id| self.admit(id, Role::Member, AddedVia::JoinRequest, by, now))
            .collect())
    }

    pub(super) fn reject_join_requests(
        &self,
        contact_ids: Vec<ContactId>,
        by: GroupActor,
        now: DateTime<Utc>,
    ) -> Result<Vec<GroupEvent>, GroupError> {
        self.require_admin(by, AdminAction::HandleJoinRequests)?;
        let contact_ids = self.pending_requests(contact_ids)?;
        Ok(contact_ids
            .into_iter()
            .map(|contact_id| GroupEvent::JoinRequestRejected { contact_id, by, rejected_at: now })
            .collect())
    }

    pub(super) fn change_settings(
        &self,
        patch: GroupSettingsPatch,
        by: GroupActor,
        now: DateTime<Utc>,
    ) -> Result<Option<GroupEvent>, GroupError> {
        self.require_admin(by, AdminAction::ChangeSettings)?;
        let settings = self.settings.patched(patch);
        Ok((settings != self.settings).then_some(GroupEvent::GroupSettingsChanged {
            settings,
            by,
            changed_at: now,
        }))
    }
}
