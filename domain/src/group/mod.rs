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

mod events;
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

pub use events::GroupEvent;
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

/// A group as created.
#[derive(Debug, Clone, PartialEq)]
pub struct NewGroup {
    /// The inbox (WhatsApp channel account) the group lives in.
    pub inbox_id: String,
    /// The contact that stands for the inbox's own number; always a member.
    pub inbox_contact_id: ContactId,
    /// The owner (superadmin). `None` when the inbox created the group, which makes the inbox the
    /// owner; a contact when an existing group is registered.
    pub owner_id: Option<ContactId>,
    /// The provider's id for the group (a WhatsApp JID such as `120363012345678901@g.us`).
    pub provider_group_id: Option<String>,
    /// Subject; required, at most [`MAX_SUBJECT`] characters.
    pub subject: String,
    /// Description, at most [`MAX_DESCRIPTION`] characters.
    pub description: Option<String>,
    /// The other participants, as contacts (E.164 numbers are resolved to contacts before the
    /// command is built), each a member or an admin.
    pub participants: Vec<GroupMember>,
    /// Settings it starts with.
    pub settings: GroupSettings,
    /// The invite code the provider gave it, if known.
    pub invite_code: Option<String>,
}

/// A change to the subject, description or avatar. `None` keeps a field; `Some(None)` clears an
/// optional one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupMetadataPatch {
    /// New subject.
    pub subject: Option<String>,
    /// New description, or `Some(None)` to clear it.
    pub description: Option<Option<String>>,
    /// New avatar url (http or https), or `Some(None)` to clear it.
    pub avatar_url: Option<Option<String>>,
}

/// Commands a Group accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupCommand {
    /// Creates the group.
    CreateGroup {
        /// The new group's id.
        group_id: GroupId,
        /// The owning tenant.
        tenant_id: TenantId,
        /// The details.
        group: NewGroup,
    },
    /// Adds contacts as members; those already members are skipped. Needs admin rights when
    /// `member_add_mode` is admins-only.
    AddMembers {
        /// The contacts to add.
        contact_ids: Vec<ContactId>,
        /// Who adds them.
        by: GroupActor,
    },
    /// Removes a member. Needs admin rights; the owner cannot be removed.
    RemoveMember {
        /// The member.
        contact_id: ContactId,
        /// Who removes them.
        by: GroupActor,
    },
    /// Makes a member an admin. Needs admin rights.
    PromoteMember {
        /// The member.
        contact_id: ContactId,
        /// Who promotes them.
        by: GroupActor,
    },
    /// Makes an admin a plain member. Needs admin rights; the owner cannot be demoted.
    DemoteMember {
        /// The member.
        contact_id: ContactId,
        /// Who demotes them.
        by: GroupActor,
    },
    /// The actor leaves: `Inbox` is the inbox's own member leaving (which marks the group left);
    /// `Provider { author: Some(contact) }` reports that contact leaving.
    LeaveGroup {
        /// Who leaves.
        by: GroupActor,
    },
    /// Changes subject, description or avatar. With `restrict` on, needs admin rights.
    UpdateMetadata {
        /// The changes.
        patch: GroupMetadataPatch,
        /// Who changes them.
        by: GroupActor,
    },
    /// Revokes the invite link: `new_code` (obtained from the provider) replaces the current one,
    /// which stops working. Needs admin rights.
    RevokeInvite {
        /// The code that replaces the current one.
        new_code: String,
        /// Who revokes it.
        by: GroupActor,
    },
    /// A contact joins with the invite code: a member at once, or a pending request when
    /// `join_approval_mode` is on. A code other than the current one is refused.
    JoinViaInvite {
        /// The contact joining.
        contact_id: ContactId,
        /// The code they used.
        code: String,
    },
    /// A contact asks to join without a code; the request waits for an admin.
    RequestJoin {
        /// The contact asking.
        contact_id: ContactId,
    },
    /// Approves pending join requests, making the contacts members. Needs admin rights; refused as
    /// a whole if any contact has no pending request.
    ApproveJoinRequests {
        /// The contacts whose requests are approved.
        contact_ids: Vec<ContactId>,
        /// Who approves.
        by: GroupActor,
    },
    /// Rejects pending join requests. Needs admin rights; refused as a whole if any contact has no
    /// pending request.
    RejectJoinRequests {
        /// The contacts whose requests are rejected.
        contact_ids: Vec<ContactId>,
        /// Who rejects.
        by: GroupActor,
    },
    /// Changes some settings. Needs admin rights.
    ChangeSettings {
        /// The changes.
        patch: GroupSettingsPatch,
        /// Who changes them.
        by: GroupActor,
    },
    /// Asks for a sync with the provider. Records [`GroupEvent::GroupSyncRequested`], which a
    /// background job answers with [`GroupCommand::SyncGroup`]; within [`SYNC_COOLDOWN`] of the last
    /// accepted request and without `force` it records nothing (see [`Group::sync_due`]).
    RequestSync {
        /// Sync even within the cooldown.
        force: bool,
    },
    /// Reconciles the group with the provider's full view, recording only what differs.
    SyncGroup {
        /// What the provider says the group is.
        view: ProviderView,
    },
    /// Records group activity the provider saw (messages not processed one by one).
    RecordActivity {
        /// When the activity happened; a time after the command's is taken as the command's.
        at: DateTime<Utc>,
    },
}

/// What only admins may do; names the rule in [`GroupError::AdminsOnly`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminAction {
    /// Adding members while `member_add_mode` is admins-only.
    AddMembers,
    /// Removing members.
    RemoveMembers,
    /// Promoting and demoting.
    ChangeRoles,
    /// Editing subject, description or avatar while `restrict` is on.
    EditInfo,
    /// Changing settings.
    ChangeSettings,
    /// Revoking the invite link.
    RevokeInvite,
    /// Approving and rejecting join requests.
    HandleJoinRequests,
}

impl fmt::Display for AdminAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AddMembers => "add members (member_add_mode is admins only)",
            Self::RemoveMembers => "remove members",
            Self::ChangeRoles => "promote or demote members",
            Self::EditInfo => "edit the subject, description or avatar (restrict is on)",
            Self::ChangeSettings => "change the group's settings",
            Self::RevokeInvite => "revoke the invite link",
            Self::HandleJoinRequests => "approve or reject join requests",
        })
    }
}

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

const INVITE_URL_PREFIX: &str = "https://chat.whatsapp.com/";

fn subject(value: &str) -> Result<String, FieldError> {
    validate::text("subject", value, MAX_SUBJECT, true)
}

fn description(value: Option<&str>) -> Result<Option<String>, FieldError> {
    validate::optional_text("description", value, MAX_DESCRIPTION)
}

/// An avatar url: http or https with a host, no white space or control characters.
fn avatar_url(value: Option<&str>) -> Result<Option<String>, FieldError> {
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
fn invite_code(field: &str, value: &str) -> Result<String, FieldError> {
    let value = value.trim();
    let valid = (1..=64).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(value.to_owned())
    } else {
        Err(FieldError::new(field, "must be 1 to 64 letters, digits, '-' or '_'"))
    }
}

fn not_empty<T>(field: &str, values: &[T]) -> Result<(), FieldError> {
    if values.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    Ok(())
}

/// The contacts in `contact_ids` once each, in their first order.
fn distinct(contact_ids: Vec<ContactId>) -> Vec<ContactId> {
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
    fn require_live(&self) -> Result<GroupId, GroupError> {
        let id = self.id.ok_or(GroupError::NotFound)?;
        if self.left {
            return Err(GroupError::Left(id));
        }
        Ok(id)
    }

    /// Refuses the inbox an admin-only action when it is not an admin. Provider reports pass:
    /// they describe what WhatsApp already allowed.
    fn require_admin(&self, by: GroupActor, action: AdminAction) -> Result<(), GroupError> {
        match by {
            GroupActor::Provider { .. } => Ok(()),
            GroupActor::Inbox if self.inbox_role().is_some_and(Role::is_admin) => Ok(()),
            GroupActor::Inbox => Err(GroupError::AdminsOnly(action)),
        }
    }

    fn require_member(&self, contact: ContactId) -> Result<Role, GroupError> {
        self.role_of(contact).ok_or(GroupError::NotAMember(contact))
    }

    fn require_room(&self, more: usize) -> Result<(), GroupError> {
        let members = self.members.len();
        if members + more > MAX_MEMBERS {
            return Err(GroupError::Full { members, free: MAX_MEMBERS.saturating_sub(members) });
        }
        Ok(())
    }

    /// The events that make `contact` a member; a pending join request is answered first.
    fn admit(
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
    fn depart(
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

    fn role_change(
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

    fn create(
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

    fn add_members(
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

    fn remove_member(
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

    fn change_role(
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

    fn leave(&self, by: GroupActor, now: DateTime<Utc>) -> Result<Vec<GroupEvent>, GroupError> {
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

    fn update_metadata(
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

    fn revoke_invite(
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

    fn join_via_invite(
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
    fn pending_requests(&self, contact_ids: Vec<ContactId>) -> Result<Vec<ContactId>, GroupError> {
        not_empty("contact_ids", &contact_ids)?;
        let contact_ids = distinct(contact_ids);
        if let Some(unknown) = contact_ids.iter().find(|id| !self.join_requests.contains_key(id)) {
            return Err(GroupError::NoJoinRequest(*unknown));
        }
        Ok(contact_ids)
    }

    fn approve_join_requests(
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

    fn reject_join_requests(
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

    fn change_settings(
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
