//! Provider sync: the provider's full view of a group, and its reconciliation into the fewest
//! events that bring the aggregate to that view (none when it already matches).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    description, invite_code, subject, AddedVia, Group, GroupActor, GroupError, GroupEvent, GroupMember,
    GroupSettings, Role, MAX_MEMBERS,
};
use crate::ids::ContactId;
use crate::validate::FieldError;

/// What the provider says a group is now. Participants are contacts: the numbers the provider
/// lists are resolved to contacts before the command is built.
///
/// The avatar is not part of it: provider picture urls are short-lived and would differ on every
/// fetch, so it changes through [`super::GroupCommand::UpdateMetadata`] when the provider reports
/// a new picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderView {
    /// Subject.
    pub subject: String,
    /// Description.
    pub description: Option<String>,
    /// Settings.
    pub settings: GroupSettings,
    /// Every participant with their role, the inbox's own number included while it is a member.
    pub participants: Vec<GroupMember>,
    /// The invite code, when the provider reported it; `None` keeps the current one.
    pub invite_code: Option<String>,
}

impl Group {
    /// The events that turn this group into `view`, in a fixed order: subject, description,
    /// settings, invite code, members added (in the view's order), roles changed, members removed
    /// (the inbox's own member last, since that leaves the group). Recorded as the provider's doing.
    pub(super) fn reconcile(
        &self,
        view: ProviderView,
        now: DateTime<Utc>,
    ) -> Result<Vec<GroupEvent>, GroupError> {
        let by = GroupActor::PROVIDER;
        let subject = subject(&view.subject)?;
        let description = description(view.description.as_deref())?;
        let invite_code = view.invite_code.map(|code| invite_code("invite_code", &code)).transpose()?;

        // One contact may appear twice when two of its numbers (a phone and a LID) are listed; it
        // keeps the higher role.
        let mut roster: BTreeMap<ContactId, Role> = BTreeMap::new();
        let mut order = Vec::with_capacity(view.participants.len());
        for participant in view.participants {
            let role = roster.entry(participant.contact_id).or_insert_with(|| {
                order.push(participant.contact_id);
                participant.role
            });
            *role = (*role).max(participant.role);
        }
        if roster.len() > MAX_MEMBERS {
            return Err(FieldError::new(
                "participants",
                format!("a group has at most {MAX_MEMBERS} members"),
            )
            .into());
        }

        let mut events = Vec::new();
        if subject != self.subject {
            events.push(GroupEvent::GroupSubjectChanged { subject, by, changed_at: now });
        }
        if description != self.description {
            events.push(GroupEvent::GroupDescriptionChanged { description, by, changed_at: now });
        }
        if view.settings != self.settings {
            events.push(GroupEvent::GroupSettingsChanged { settings: view.settings, by, changed_at: now });
        }
        if let Some(code) = invite_code.filter(|code| self.invite_code.as_ref() != Some(code)) {
            events.push(GroupEvent::InviteCodeRevoked {
                previous_code: self.invite_code.clone(),
                invite_code: code,
                by,
                revoked_at: now,
            });
        }
        let (new, existing): (Vec<ContactId>, Vec<ContactId>) =
            order.into_iter().partition(|contact_id| !self.is_member(*contact_id));
        for contact_id in new {
            events.extend(self.admit(contact_id, roster[&contact_id], AddedVia::Added, by, now));
        }
        for contact_id in existing {
            if let Some(from) = self.role_of(contact_id) {
                events.extend(Self::role_change(contact_id, from, roster[&contact_id], by, now));
            }
        }
        let inbox = self.inbox_contact_id;
        let gone = self.members.keys().copied().filter(|id| !roster.contains_key(id));
        let (inbox_gone, others_gone): (Vec<ContactId>, Vec<ContactId>) =
            gone.partition(|id| Some(*id) == inbox);
        for contact_id in others_gone.into_iter().chain(inbox_gone) {
            events.extend(self.depart(contact_id, Some(by), now));
        }
        Ok(events)
    }
}
