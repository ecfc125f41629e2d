//! The Group aggregate: a WhatsApp-style group chat in one inbox, with its members and their roles
//! (superadmin, admin, member), its subject, description and avatar, its settings (announce,
//! restrict, join approval, who may add members), its invite code, the join requests waiting for
//! an admin, provider sync requests and reconciliation, and the time of its last activity.
//!
//! Two kinds of actor change a group (see [`GroupActor`]). Colloquy acts through the inbox's own
//! number, so what it may do follows the inbox member's role and the group's settings. The provider
//! reports what already happened on WhatsApp; those facts are recorded without permission rules,
//! because the group has changed whatever Colloquy thinks of it.
//!
//! The inbox's own number is a member like any other, identified by a contact
//! ([`Group::inbox_contact_id`]): one key type for every member keeps `is_member`, `role_of` and the
//! member list uniform. When that member leaves or is removed the group records [`GroupEvent::GroupLeft`]
//! and refuses every later command with [`GroupError::Left`].

mod commands;
mod events;
mod rules;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use std::fmt;

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};

use serde::{Deserialize, Serialize};

use uuid::Uuid;

use cqrs_es::event_sink::EventSink;

use cqrs_es::{Aggregate, DomainEvent};

pub use commands::*;
pub use events::GroupEvent;
pub use rules::*;

pub use sync::ProviderView;

use crate::context::CommandContext;

use crate::footprint::{self, Footprint};

use crate::ids::{ContactId, TenantId};

use crate::validate::{self, FieldError};

use crate::{TenantOwned, EVENT_VERSION_1};

/// The most members a group has, as WhatsApp allows.
pub const MAX_MEMBERS: usize = 1024;

/// The longest subject, in characters, as WhatsApp allows.
pub const MAX_SUBJECT: usize = 100;

/// The longest description, in characters, as WhatsApp allows.
pub const MAX_DESCRIPTION: usize = 2048;

/// The longest avatar url, in characters.
pub const MAX_AVATAR_URL: usize = 2048;

/// How long after an accepted sync request another one is skipped unless forced.
pub const SYNC_COOLDOWN: TimeDelta = TimeDelta::minutes(15);

/// Identifies a Group aggregate. Defined here rather than in `ids` because only groups use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupId(pub Uuid);

impl GroupId {
    /// A new time-ordered (v7) id. Ids are chosen outside the domain, so this is called by the API
    /// layer and by tests, never by `handle`.
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for GroupId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// A member's role. Ordered by power, so `from < to` is a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Takes part; may act only as the settings allow all members.
    Member,
    /// Manages members, settings and the invite link.
    Admin,
    /// The owner (the creator on WhatsApp): an admin that requested commands can neither remove
    /// nor demote.
    Superadmin,
}

impl Role {
    /// Whether the role carries admin rights (admins and the superadmin).
    pub fn is_admin(self) -> bool {
        matches!(self, Self::Admin | Self::Superadmin)
    }
}

/// Who may add members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MemberAddMode {
    /// Only admins add members (WhatsApp's `admin_add`).
    #[default]
    AdminsOnly,
    /// Every member adds members (WhatsApp's `all_member_add`).
    AllMembers,
}

/// The group's settings, all off (and adding members admins-only) by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupSettings {
    /// Only admins may send messages.
    pub announce: bool,
    /// Only admins may edit the subject, description and avatar.
    pub restrict: bool,
    /// Joining through the invite link needs an admin's approval.
    pub join_approval_mode: bool,
    /// Who may add members.
    pub member_add_mode: MemberAddMode,
}

/// A change to some settings; `None` keeps a setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSettingsPatch {
    /// New `announce`.
    pub announce: Option<bool>,
    /// New `restrict`.
    pub restrict: Option<bool>,
    /// New `join_approval_mode`.
    pub join_approval_mode: Option<bool>,
    /// New `member_add_mode`.
    pub member_add_mode: Option<MemberAddMode>,
}

impl GroupSettings {
    fn patched(self, patch: GroupSettingsPatch) -> Self {
        Self {
            announce: patch.announce.unwrap_or(self.announce),
            restrict: patch.restrict.unwrap_or(self.restrict),
            join_approval_mode: patch.join_approval_mode.unwrap_or(self.join_approval_mode),
            member_add_mode: patch.member_add_mode.unwrap_or(self.member_add_mode),
        }
    }
}

/// A member and their role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupMember {
    /// The member's contact.
    pub contact_id: ContactId,
    /// Their role.
    pub role: Role,
}

/// Who does something to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GroupActor {
    /// Colloquy, acting through the inbox's own number (an agent or integration via the API).
    /// Checked against the inbox member's role and the group's settings.
    Inbox,
    /// The provider, reporting what already happened on WhatsApp (a webhook or a sync), done by
    /// `author` when the provider names them. Recorded as a fact, without permission rules.
    Provider {
        /// The member who did it, when known.
        author: Option<ContactId>,
    },
}

impl GroupActor {
    /// The provider, reporting a change without naming its author.
    pub const PROVIDER: Self = Self::Provider { author: None };
}

/// How a member came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddedVia {
    /// Someone added them (or the provider reported them as added).
    Added,
    /// They joined with the invite code.
    InviteLink,
    /// Their join request was approved.
    JoinRequest,
}

/// How a join request was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RequestVia {
    /// Through the invite link while `join_approval_mode` is on.
    InviteLink,
    /// Directly (e.g. from a community), without a code.
    Direct,
}

/// A join request waiting for an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JoinRequest {
    /// How it was made.
    pub via: RequestVia,
    /// When.
    pub requested_at: DateTime<Utc>,
}

/// Why the group counts as left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftBecause {
    /// The inbox's member left.
    Left,
    /// The inbox's member was removed.
    Removed,
}

/// The Group aggregate's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Its id, once created.
    pub id: Option<GroupId>,
    /// The owning tenant, once created.
    pub tenant_id: Option<TenantId>,
    /// The inbox it lives in.
    pub inbox_id: String,
    /// The contact that stands for the inbox's own number.
    pub inbox_contact_id: Option<ContactId>,
    /// The provider's id for the group.
    pub provider_group_id: Option<String>,
    /// Subject.
    pub subject: String,
    /// Description.
    pub description: Option<String>,
    /// Avatar url.
    pub avatar_url: Option<String>,
    /// Settings.
    pub settings: GroupSettings,
    /// The current invite code.
    pub invite_code: Option<String>,
    /// Current members and their roles.
    pub members: BTreeMap<ContactId, Role>,
    /// Pending join requests.
    pub join_requests: BTreeMap<ContactId, JoinRequest>,
    /// Whether the inbox's own member left or was removed.
    pub left: bool,
    /// When that happened.
    pub left_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: Option<DateTime<Utc>>,
    /// Time of the last change to the group itself (activity and sync requests excluded).
    pub updated_at: Option<DateTime<Utc>>,
    /// Time of the latest activity the provider reported.
    pub last_activity_at: Option<DateTime<Utc>>,
    /// When the last sync request that was not skipped was made.
    pub last_sync_requested_at: Option<DateTime<Utc>>,
}

impl TenantOwned for Group {
    fn tenant(&self) -> Option<&TenantId> {
        self.tenant_id.as_ref()
    }
}

impl Footprint for Group {
    fn footprint(&self) -> usize {
        size_of::<Self>()
            + footprint::string(&self.inbox_id)
            + footprint::string(&self.subject)
            + footprint::optional_strings([
                &self.provider_group_id,
                &self.description,
                &self.avatar_url,
                &self.invite_code,
            ])
            + footprint::map_entries::<ContactId, Role>(self.members.len(), 0)
            + footprint::map_entries::<ContactId, JoinRequest>(self.join_requests.len(), 0)
    }
}

impl Group {
    /// Folds the next event of the group's stream into the group as it stood at `as_of`: applied
    /// when it had happened by then ([`GroupEvent::in_history_at`]); false, and not applied, when
    /// it had not, which ends the prefix of the stream that `as_of` reads.
    pub fn apply_as_of(&mut self, event: GroupEvent, as_of: DateTime<Utc>) -> bool {
        if event.in_history_at() > as_of {
            return false;
        }
        cqrs_es::Aggregate::apply(self, event);
        true
    }
}

impl Aggregate for Group {
    const TYPE: &'static str = "group";
    type Command = GroupCommand;
    type Event = GroupEvent;
    type Error = GroupError;
    type Services = CommandContext;

    async fn handle(
        &mut self,
        command: Self::Command,
        ctx: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let now = ctx.now;
        // Every branch decides all its events before writing any, so a refusal leaves the
        // aggregate untouched (the store relies on that to keep its cached copy).
        let events = match command {
            GroupCommand::CreateGroup { group_id, tenant_id, group } => {
                vec![self.create(group_id, tenant_id, group, now)?]
            }
            command => {
                let id = self.require_live()?;
                match command {
                    GroupCommand::CreateGroup { .. } => return Err(GroupError::AlreadyExists(id)),
                    GroupCommand::AddMembers { contact_ids, by } => self.add_members(contact_ids, by, now)?,
                    GroupCommand::RemoveMember { contact_id, by } => {
                        self.remove_member(contact_id, by, now)?
                    }
                    GroupCommand::PromoteMember { contact_id, by } => {
                        self.change_role(contact_id, Role::Admin, by, now)?.into_iter().collect()
                    }
                    GroupCommand::DemoteMember { contact_id, by } => {
                        self.change_role(contact_id, Role::Member, by, now)?.into_iter().collect()
                    }
                    GroupCommand::LeaveGroup { by } => self.leave(by, now)?,
                    GroupCommand::UpdateMetadata { patch, by } => self.update_metadata(patch, by, now)?,
                    GroupCommand::RevokeInvite { new_code, by } => {
                        vec![self.revoke_invite(&new_code, by, now)?]
                    }
                    GroupCommand::JoinViaInvite { contact_id, code } => {
                        self.join_via_invite(contact_id, &code, now)?
                    }
                    GroupCommand::RequestJoin { contact_id } => {
                        if self.is_member(contact_id) || self.join_requests.contains_key(&contact_id) {
                            vec![]
                        } else {
                            vec![GroupEvent::JoinRequested {
                                contact_id,
                                via: RequestVia::Direct,
                                requested_at: now,
                            }]
                        }
                    }
                    GroupCommand::ApproveJoinRequests { contact_ids, by } => {
                        self.approve_join_requests(contact_ids, by, now)?
                    }
                    GroupCommand::RejectJoinRequests { contact_ids, by } => {
                        self.reject_join_requests(contact_ids, by, now)?
                    }
                    GroupCommand::ChangeSettings { patch, by } => {
                        self.change_settings(patch, by, now)?.into_iter().collect()
                    }
                    GroupCommand::RequestSync { force } => match self.sync_due(now, force) {
                        Ok(()) => vec![GroupEvent::GroupSyncRequested { force, requested_at: now }],
                        // A skipped request is not a refusal: the caller asked for "fresh enough",
                        // and it is. The API tells why with `sync_due` before sending this.
                        Err(SyncSkipped { .. }) => vec![],
                    },
                    GroupCommand::SyncGroup { view } => self.reconcile(view, now)?,
                    GroupCommand::RecordActivity { at } => {
                        // Pings arrive batched and out of order; only a later one moves the time.
                        // A provider clock ahead of ours must not push it into the future.
                        let at = validate::instant("at", at)?.min(now);
                        if self.last_activity_at.is_some_and(|last| last >= at) {
                            vec![]
                        } else {
                            vec![GroupEvent::GroupActivityRecorded { last_activity_at: at, recorded_at: now }]
                        }
                    }
                }
            }
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            GroupEvent::GroupCreated {
                group_id,
                tenant_id,
                inbox_id,
                inbox_contact_id,
                provider_group_id,
                subject,
                description,
                members,
                settings,
                invite_code,
                created_at,
            } => {
                *self = Group {
                    id: Some(group_id),
                    tenant_id: Some(tenant_id),
                    inbox_id,
                    inbox_contact_id: Some(inbox_contact_id),
                    provider_group_id,
                    subject,
                    description,
                    avatar_url: None,
                    settings,
                    invite_code,
                    members: members.into_iter().map(|m| (m.contact_id, m.role)).collect(),
                    join_requests: BTreeMap::new(),
                    left: false,
                    left_at: None,
                    created_at: Some(created_at),
                    updated_at: Some(created_at),
                    last_activity_at: None,
                    last_sync_requested_at: None,
                };
            }
            GroupEvent::MemberAdded { contact_id, role, added_at, .. } => {
                self.members.insert(contact_id, role);
                self.updated_at = Some(added_at);
            }
            GroupEvent::MemberRemoved { contact_id, removed_at: at, .. }
            | GroupEvent::MemberLeft { contact_id, left_at: at } => {
                self.members.remove(&contact_id);
                self.updated_at = Some(at);
            }
            GroupEvent::MemberPromoted { contact_id, to, promoted_at: at, .. }
            | GroupEvent::MemberDemoted { contact_id, to, demoted_at: at, .. } => {
                self.members.insert(contact_id, to);
                self.updated_at = Some(at);
            }
            GroupEvent::GroupLeft { left_at, .. } => {
                self.left = true;
                self.left_at = Some(left_at);
                self.updated_at = Some(left_at);
            }
            GroupEvent::GroupSubjectChanged { subject, changed_at, .. } => {
                self.subject = subject;
                self.updated_at = Some(changed_at);
            }
            GroupEvent::GroupDescriptionChanged { description, changed_at, .. } => {
                self.description = description;
                self.updated_at = Some(changed_at);
            }
            GroupEvent::GroupAvatarChanged { avatar_url, changed_at, .. } => {
                self.avatar_url = avatar_url;
                self.updated_at = Some(changed_at);
            }
            GroupEvent::GroupSettingsChanged { settings, changed_at, .. } => {
                self.settings = settings;
                self.updated_at = Some(changed_at);
            }
            GroupEvent::InviteCodeRevoked { invite_code, revoked_at, .. } => {
                self.invite_code = Some(invite_code);
                self.updated_at = Some(revoked_at);
            }
            GroupEvent::JoinRequested { contact_id, via, requested_at } => {
                self.join_requests.insert(contact_id, JoinRequest { via, requested_at });
                self.updated_at = Some(requested_at);
            }
            GroupEvent::JoinRequestApproved { contact_id, approved_at: at, .. }
            | GroupEvent::JoinRequestRejected { contact_id, rejected_at: at, .. } => {
                self.join_requests.remove(&contact_id);
                self.updated_at = Some(at);
            }
            GroupEvent::GroupSyncRequested { requested_at, .. } => {
                self.last_sync_requested_at = Some(requested_at);
            }
            GroupEvent::GroupActivityRecorded { last_activity_at, .. } => {
                self.last_activity_at = Some(last_activity_at);
            }
        }
    }
}
