//! What can be asked of a group: its commands and the inputs they carry.

use super::*;

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
