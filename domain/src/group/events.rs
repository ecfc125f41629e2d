//! The Group's events: the stored contract. Each is a past-tense fact with every field a
//! projector needs; a shape, once stored, changes only with a new `event_version` and an
//! upcaster.

use super::*;

/// Facts about a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupEvent {
    /// The group was created with these members.
    GroupCreated {
        /// Its id.
        group_id: GroupId,
        /// The owning tenant.
        tenant_id: TenantId,
        /// The inbox it lives in.
        inbox_id: String,
        /// The contact that stands for the inbox's own number.
        inbox_contact_id: ContactId,
        /// The provider's id for the group.
        provider_group_id: Option<String>,
        /// Subject.
        subject: String,
        /// Description.
        description: Option<String>,
        /// Every member with their role: the owner first, the inbox always among them.
        members: Vec<GroupMember>,
        /// Settings.
        settings: GroupSettings,
        /// Invite code, if known.
        invite_code: Option<String>,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// A contact became a member.
    MemberAdded {
        /// The member.
        contact_id: ContactId,
        /// Their role.
        role: Role,
        /// How they came in.
        via: AddedVia,
        /// Who let them in (for invite joins, the provider naming the joiner).
        by: GroupActor,
        /// When.
        added_at: DateTime<Utc>,
    },
    /// A member was removed by someone else.
    MemberRemoved {
        /// The member.
        contact_id: ContactId,
        /// Who removed them.
        by: GroupActor,
        /// When.
        removed_at: DateTime<Utc>,
    },
    /// A member left.
    MemberLeft {
        /// The member.
        contact_id: ContactId,
        /// When.
        left_at: DateTime<Utc>,
    },
    /// A member gained a higher role.
    MemberPromoted {
        /// The member.
        contact_id: ContactId,
        /// Before.
        from: Role,
        /// Now.
        to: Role,
        /// Who promoted them.
        by: GroupActor,
        /// When.
        promoted_at: DateTime<Utc>,
    },
    /// A member got a lower role.
    MemberDemoted {
        /// The member.
        contact_id: ContactId,
        /// Before.
        from: Role,
        /// Now.
        to: Role,
        /// Who demoted them.
        by: GroupActor,
        /// When.
        demoted_at: DateTime<Utc>,
    },
    /// The inbox's own member is gone, so the inbox can no longer manage or write to the group.
    /// Follows the `MemberLeft` or `MemberRemoved` of the inbox's contact; a process manager closes
    /// the group's conversations in reaction.
    GroupLeft {
        /// Whether the inbox left or was removed.
        because: LeftBecause,
        /// When.
        left_at: DateTime<Utc>,
    },
    /// The subject changed.
    GroupSubjectChanged {
        /// The subject now.
        subject: String,
        /// Who changed it.
        by: GroupActor,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// The description changed.
    GroupDescriptionChanged {
        /// The description now.
        description: Option<String>,
        /// Who changed it.
        by: GroupActor,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// The avatar changed.
    GroupAvatarChanged {
        /// The avatar url now.
        avatar_url: Option<String>,
        /// Who changed it.
        by: GroupActor,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// Some settings changed; carries all of them after the change.
    GroupSettingsChanged {
        /// The settings now.
        settings: GroupSettings,
        /// Who changed them.
        by: GroupActor,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// The invite code was replaced; the previous one no longer admits anyone.
    InviteCodeRevoked {
        /// The code before, if there was one.
        previous_code: Option<String>,
        /// The code now.
        invite_code: String,
        /// Who revoked it.
        by: GroupActor,
        /// When.
        revoked_at: DateTime<Utc>,
    },
    /// A contact asked to join; the request waits for an admin.
    JoinRequested {
        /// The contact.
        contact_id: ContactId,
        /// How they asked.
        via: RequestVia,
        /// When.
        requested_at: DateTime<Utc>,
    },
    /// A join request was approved; a `MemberAdded` follows.
    JoinRequestApproved {
        /// The contact.
        contact_id: ContactId,
        /// Who approved it.
        by: GroupActor,
        /// When.
        approved_at: DateTime<Utc>,
    },
    /// A join request was rejected.
    JoinRequestRejected {
        /// The contact.
        contact_id: ContactId,
        /// Who rejected it.
        by: GroupActor,
        /// When.
        rejected_at: DateTime<Utc>,
    },
    /// A sync with the provider was asked for and not skipped; a job fetches the provider's view
    /// and answers with `SyncGroup`.
    GroupSyncRequested {
        /// Whether it was forced through the cooldown.
        force: bool,
        /// When.
        requested_at: DateTime<Utc>,
    },
    /// The provider saw activity in the group.
    GroupActivityRecorded {
        /// The time of the latest activity.
        last_activity_at: DateTime<Utc>,
        /// When it was recorded.
        recorded_at: DateTime<Utc>,
    },
}

impl GroupEvent {
    /// When the fact happened; for activity, when the provider saw it.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::GroupCreated { created_at: at, .. }
            | Self::MemberAdded { added_at: at, .. }
            | Self::MemberRemoved { removed_at: at, .. }
            | Self::MemberLeft { left_at: at, .. }
            | Self::MemberPromoted { promoted_at: at, .. }
            | Self::MemberDemoted { demoted_at: at, .. }
            | Self::GroupLeft { left_at: at, .. }
            | Self::GroupSubjectChanged { changed_at: at, .. }
            | Self::GroupDescriptionChanged { changed_at: at, .. }
            | Self::GroupAvatarChanged { changed_at: at, .. }
            | Self::GroupSettingsChanged { changed_at: at, .. }
            | Self::InviteCodeRevoked { revoked_at: at, .. }
            | Self::JoinRequested { requested_at: at, .. }
            | Self::JoinRequestApproved { approved_at: at, .. }
            | Self::JoinRequestRejected { rejected_at: at, .. }
            | Self::GroupSyncRequested { requested_at: at, .. }
            | Self::GroupActivityRecorded { last_activity_at: at, .. } => *at,
        }
    }

    /// Where the fact falls in the group's history, for reading the group as it stood at a
    /// time: when it happened, except activity, which carries the provider's time (that may lie
    /// before when it was recorded) and falls when it was recorded, so the stream's prefix up to
    /// any time stays in order.
    pub fn in_history_at(&self) -> DateTime<Utc> {
        match self {
            Self::GroupActivityRecorded { recorded_at, .. } => *recorded_at,
            other => other.occurred_at(),
        }
    }
}

impl DomainEvent for GroupEvent {
    fn event_type(&self) -> String {
        match self {
            Self::GroupCreated { .. } => "GroupCreated",
            Self::MemberAdded { .. } => "MemberAdded",
            Self::MemberRemoved { .. } => "MemberRemoved",
            Self::MemberLeft { .. } => "MemberLeft",
            Self::MemberPromoted { .. } => "MemberPromoted",
            Self::MemberDemoted { .. } => "MemberDemoted",
            Self::GroupLeft { .. } => "GroupLeft",
            Self::GroupSubjectChanged { .. } => "GroupSubjectChanged",
            Self::GroupDescriptionChanged { .. } => "GroupDescriptionChanged",
            Self::GroupAvatarChanged { .. } => "GroupAvatarChanged",
            Self::GroupSettingsChanged { .. } => "GroupSettingsChanged",
            Self::InviteCodeRevoked { .. } => "InviteCodeRevoked",
            Self::JoinRequested { .. } => "JoinRequested",
            Self::JoinRequestApproved { .. } => "JoinRequestApproved",
            Self::JoinRequestRejected { .. } => "JoinRequestRejected",
            Self::GroupSyncRequested { .. } => "GroupSyncRequested",
            Self::GroupActivityRecorded { .. } => "GroupActivityRecorded",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}
