//! Given/when/then tests for every Group command, refusals included, and the rules the
//! conversation side asks of a group.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, DomainEvent};
use uuid::Uuid;

use super::*;
use crate::context::{Actor, ActorKind};

type GroupTest = TestFramework<Group>;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single().expect("valid time")
}

fn minutes_later(minutes: i64) -> DateTime<Utc> {
    now() + Duration::minutes(minutes)
}

fn services() -> CommandContext {
    services_at(now())
}

fn services_at(at: DateTime<Utc>) -> CommandContext {
    CommandContext::new(at, Actor { kind: ActorKind::Token, id: "test".into() })
}

fn group_id() -> GroupId {
    GroupId(Uuid::from_u128(0x0191_0000_0000_7000_8000_0000_0000_00e1))
}

fn tenant() -> TenantId {
    TenantId::parse("acme").expect("valid tenant")
}

fn contact(n: u128) -> ContactId {
    ContactId(Uuid::from_u128(0x0191_0000_0000_7000_8000_0000_0000_0a00 + n))
}

/// The contact standing for the inbox's own number.
fn inbox() -> ContactId {
    contact(0)
}

fn ann() -> ContactId {
    contact(1)
}

fn bob() -> ContactId {
    contact(2)
}

fn cai() -> ContactId {
    contact(3)
}

fn dora() -> ContactId {
    contact(4)
}

fn member(contact_id: ContactId, role: Role) -> GroupMember {
    GroupMember { contact_id, role }
}

fn by_author(author: ContactId) -> GroupActor {
    GroupActor::Provider { author: Some(author) }
}

fn new_group() -> NewGroup {
    NewGroup {
        inbox_id: "inbox-1".into(),
        inbox_contact_id: inbox(),
        owner_id: None,
        provider_group_id: Some("120363012345678901@g.us".into()),
        subject: " Launch crew ".into(),
        description: Some("Everything about the launch".into()),
        participants: vec![member(ann(), Role::Member), member(bob(), Role::Admin)],
        settings: GroupSettings::default(),
        invite_code: Some("CODE1".into()),
    }
}

fn create(group: NewGroup) -> GroupCommand {
    GroupCommand::CreateGroup { group_id: group_id(), tenant_id: tenant(), group }
}

fn created_with(members: Vec<GroupMember>, settings: GroupSettings) -> GroupEvent {
    GroupEvent::GroupCreated {
        group_id: group_id(),
        tenant_id: tenant(),
        inbox_id: "inbox-1".into(),
        inbox_contact_id: inbox(),
        provider_group_id: Some("120363012345678901@g.us".into()),
        subject: "Launch crew".into(),
        description: Some("Everything about the launch".into()),
        members,
        settings,
        invite_code: Some("CODE1".into()),
        created_at: now(),
    }
}

/// Created by the inbox, which owns it; Ann is a member and Bob an admin.
fn created() -> GroupEvent {
    created_with(
        vec![member(inbox(), Role::Superadmin), member(ann(), Role::Member), member(bob(), Role::Admin)],
        GroupSettings::default(),
    )
}

/// Owned by Dora; the inbox and Ann are plain members, Bob an admin.
fn created_by_dora() -> GroupEvent {
    created_with(
        vec![
            member(dora(), Role::Superadmin),
            member(inbox(), Role::Member),
            member(ann(), Role::Member),
            member(bob(), Role::Admin),
        ],
        GroupSettings::default(),
    )
}

fn settings_changed(settings: GroupSettings) -> GroupEvent {
    GroupEvent::GroupSettingsChanged { settings, by: GroupActor::Inbox, changed_at: now() }
}

fn join_requested(contact_id: ContactId) -> GroupEvent {
    GroupEvent::JoinRequested { contact_id, via: RequestVia::Direct, requested_at: now() }
}

fn inbox_left() -> Vec<GroupEvent> {
    vec![
        GroupEvent::MemberLeft { contact_id: inbox(), left_at: now() },
        GroupEvent::GroupLeft { because: LeftBecause::Left, left_at: now() },
    ]
}

fn added(contact_id: ContactId, via: AddedVia, by: GroupActor) -> GroupEvent {
    GroupEvent::MemberAdded { contact_id, role: Role::Member, via, by, added_at: now() }
}

fn state_after(events: Vec<GroupEvent>) -> Group {
    let mut group = Group::default();
    for event in events {
        group.apply(event);
    }
    group
}

fn field_of(result: Result<Vec<GroupEvent>, GroupError>) -> String {
    match result {
        Err(GroupError::Invalid(error)) => error.field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

// ---- create ----

#[test]
fn creating_a_group_makes_the_inbox_its_owner_and_records_every_member() {
    GroupTest::with(services())
        .given_no_previous_events()
        .when(create(new_group()))
        .then_expect_events(vec![created()]);
}

#[test]
fn a_group_registered_with_another_owner_keeps_the_inbox_as_a_plain_member() {
    GroupTest::with(services())
        .given_no_previous_events()
        .when(create(NewGroup { owner_id: Some(dora()), participants: vec![], ..new_group() }))
        .then_expect_events(vec![created_with(
            vec![member(dora(), Role::Superadmin), member(inbox(), Role::Member)],
            GroupSettings::default(),
        )]);
}

#[test]
fn a_contact_listed_twice_is_one_member_with_the_higher_role() {
    let participants =
        vec![member(ann(), Role::Member), member(ann(), Role::Admin), member(inbox(), Role::Admin)];
    GroupTest::with(services())
        .given_no_previous_events()
        .when(create(NewGroup { participants, ..new_group() }))
        .then_expect_events(vec![created_with(
            vec![member(inbox(), Role::Superadmin), member(ann(), Role::Admin)],
            GroupSettings::default(),
        )]);
}

#[test]
fn a_group_cannot_be_created_twice() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(create(new_group()))
        .then_expect_error(GroupError::AlreadyExists(group_id()));
}

#[test]
fn a_subject_is_required_and_at_most_100_characters() {
    GroupTest::with(services())
        .given_no_previous_events()
        .when(create(NewGroup { subject: "  ".into(), ..new_group() }))
        .then_expect_error(FieldError::new("subject", "must not be empty").into());
    GroupTest::with(services())
        .given_no_previous_events()
        .when(create(NewGroup { subject: "x".repeat(101), ..new_group() }))
        .then_expect_error(FieldError::new("subject", "must be at most 100 characters").into());
}

#[test]
fn a_description_longer_than_2048_characters_is_refused() {
    GroupTest::with(services())
        .given_no_previous_events()
        .when(create(NewGroup { description: Some("x".repeat(2049)), ..new_group() }))
        .then_expect_error(FieldError::new("description", "must be at most 2048 characters").into());
}

#[test]
fn only_the_owner_is_superadmin_at_creation() {
    GroupTest::with(services())
        .given_no_previous_events()
        .when(create(NewGroup { participants: vec![member(ann(), Role::Superadmin)], ..new_group() }))
        .then_expect_error(FieldError::new("participants", "only the owner is superadmin").into());
}

#[test]
fn a_group_of_more_than_1024_members_is_refused() {
    // The inbox owns it, so 1,024 other participants make 1,025 members.
    let participants = (1..=1024).map(|n| member(contact(n), Role::Member)).collect();
    let result = GroupTest::with(services())
        .given_no_previous_events()
        .when(create(NewGroup { participants, ..new_group() }))
        .inspect_result();
    assert_eq!(field_of(result), "participants");
}

#[test]
fn an_invalid_invite_code_or_inbox_id_is_refused_with_the_field_named() {
    let result = GroupTest::with(services())
        .given_no_previous_events()
        .when(create(NewGroup { invite_code: Some("not a code".into()), ..new_group() }))
        .inspect_result();
    assert_eq!(field_of(result), "invite_code");
    let result = GroupTest::with(services())
        .given_no_previous_events()
        .when(create(NewGroup { inbox_id: String::new(), ..new_group() }))
        .inspect_result();
    assert_eq!(field_of(result), "inbox_id");
}

#[test]
fn commands_on_a_group_that_was_never_created_are_refused() {
    GroupTest::with(services())
        .given_no_previous_events()
        .when(GroupCommand::AddMembers { contact_ids: vec![cai()], by: GroupActor::Inbox })
        .then_expect_error(GroupError::NotFound);
}

// ---- adding members ----

#[test]
fn an_admin_inbox_adds_new_members_and_skips_current_ones() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::AddMembers {
            contact_ids: vec![cai(), ann(), cai(), dora()],
            by: GroupActor::Inbox,
        })
        .then_expect_events(vec![
            added(cai(), AddedVia::Added, GroupActor::Inbox),
            added(dora(), AddedVia::Added, GroupActor::Inbox),
        ]);
}

#[test]
fn adding_only_current_members_records_nothing_and_an_empty_list_is_refused() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::AddMembers { contact_ids: vec![ann(), bob()], by: GroupActor::Inbox })
        .then_expect_events(vec![]);
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::AddMembers { contact_ids: vec![], by: GroupActor::Inbox })
        .then_expect_error(FieldError::new("contact_ids", "must not be empty").into());
}

#[test]
fn a_non_admin_inbox_cannot_add_members_while_only_admins_may() {
    GroupTest::with(services())
        .given(vec![created_by_dora()])
        .when(GroupCommand::AddMembers { contact_ids: vec![cai()], by: GroupActor::Inbox })
        .then_expect_error(GroupError::AdminsOnly(AdminAction::AddMembers));
}

#[test]
fn a_non_admin_inbox_adds_members_when_all_members_may() {
    let all_members =
        GroupSettings { member_add_mode: MemberAddMode::AllMembers, ..GroupSettings::default() };
    GroupTest::with(services())
        .given(vec![created_by_dora(), settings_changed(all_members)])
        .when(GroupCommand::AddMembers { contact_ids: vec![cai()], by: GroupActor::Inbox })
        .then_expect_events(vec![added(cai(), AddedVia::Added, GroupActor::Inbox)]);
}

#[test]
fn adding_past_1024_members_is_refused_naming_the_room_left() {
    let mut members: Vec<GroupMember> = vec![member(inbox(), Role::Superadmin)];
    members.extend((1..1023).map(|n| member(contact(0x1000 + n), Role::Member)));
    GroupTest::with(services())
        .given(vec![created_with(members, GroupSettings::default())])
        .when(GroupCommand::AddMembers { contact_ids: vec![ann(), bob(), cai()], by: GroupActor::Inbox })
        .then_expect_error(GroupError::Full { members: 1023, free: 1 });
}

#[test]
fn adding_a_contact_who_asked_to_join_answers_their_request() {
    GroupTest::with(services())
        .given(vec![created(), join_requested(cai())])
        .when(GroupCommand::AddMembers { contact_ids: vec![cai()], by: GroupActor::Inbox })
        .then_expect_events(vec![
            GroupEvent::JoinRequestApproved { contact_id: cai(), by: GroupActor::Inbox, approved_at: now() },
            added(cai(), AddedVia::JoinRequest, GroupActor::Inbox),
        ]);
}

// ---- removing, promoting, demoting ----

#[test]
fn removing_a_member_records_who_removed_them() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::RemoveMember { contact_id: ann(), by: GroupActor::Inbox })
        .then_expect_events(vec![GroupEvent::MemberRemoved {
            contact_id: ann(),
            by: GroupActor::Inbox,
            removed_at: now(),
        }]);
}

#[test]
fn the_owner_can_be_neither_removed_nor_demoted() {
    let promoted_inbox = GroupEvent::MemberPromoted {
        contact_id: inbox(),
        from: Role::Member,
        to: Role::Admin,
        by: by_author(dora()),
        promoted_at: now(),
    };
    GroupTest::with(services())
        .given(vec![created_by_dora(), promoted_inbox.clone()])
        .when(GroupCommand::RemoveMember { contact_id: dora(), by: GroupActor::Inbox })
        .then_expect_error(GroupError::OwnerImmune(dora()));
    GroupTest::with(services())
        .given(vec![created_by_dora(), promoted_inbox])
        .when(GroupCommand::DemoteMember { contact_id: dora(), by: GroupActor::Inbox })
        .then_expect_error(GroupError::OwnerImmune(dora()));
}

#[test]
fn removing_or_promoting_a_contact_that_is_not_a_member_is_refused() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::RemoveMember { contact_id: cai(), by: GroupActor::Inbox })
        .then_expect_error(GroupError::NotAMember(cai()));
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::PromoteMember { contact_id: cai(), by: GroupActor::Inbox })
        .then_expect_error(GroupError::NotAMember(cai()));
}

#[test]
fn a_non_admin_inbox_can_neither_remove_nor_change_roles() {
    GroupTest::with(services())
        .given(vec![created_by_dora()])
        .when(GroupCommand::RemoveMember { contact_id: ann(), by: GroupActor::Inbox })
        .then_expect_error(GroupError::AdminsOnly(AdminAction::RemoveMembers));
    GroupTest::with(services())
        .given(vec![created_by_dora()])
        .when(GroupCommand::PromoteMember { contact_id: ann(), by: GroupActor::Inbox })
        .then_expect_error(GroupError::AdminsOnly(AdminAction::ChangeRoles));
    GroupTest::with(services())
        .given(vec![created_by_dora()])
        .when(GroupCommand::DemoteMember { contact_id: bob(), by: GroupActor::Inbox })
        .then_expect_error(GroupError::AdminsOnly(AdminAction::ChangeRoles));
}

#[test]
fn promoting_a_member_makes_them_admin_and_promoting_an_admin_records_nothing() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::PromoteMember { contact_id: ann(), by: GroupActor::Inbox })
        .then_expect_events(vec![GroupEvent::MemberPromoted {
            contact_id: ann(),
            from: Role::Member,
            to: Role::Admin,
            by: GroupActor::Inbox,
            promoted_at: now(),
        }]);
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::PromoteMember { contact_id: bob(), by: GroupActor::Inbox })
        .then_expect_events(vec![]);
}

#[test]
fn demoting_an_admin_makes_them_a_member_and_demoting_a_member_records_nothing() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::DemoteMember { contact_id: bob(), by: GroupActor::Inbox })
        .then_expect_events(vec![GroupEvent::MemberDemoted {
            contact_id: bob(),
            from: Role::Admin,
            to: Role::Member,
            by: GroupActor::Inbox,
            demoted_at: now(),
        }]);
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::DemoteMember { contact_id: ann(), by: GroupActor::Inbox })
        .then_expect_events(vec![]);
}

#[test]
fn the_provider_reports_what_happened_without_permission_rules() {
    // The inbox is a plain member, yet what the provider reports is recorded, owner included.
    GroupTest::with(services())
        .given(vec![created_by_dora()])
        .when(GroupCommand::RemoveMember { contact_id: dora(), by: by_author(bob()) })
        .then_expect_events(vec![GroupEvent::MemberRemoved {
            contact_id: dora(),
            by: by_author(bob()),
            removed_at: now(),
        }]);
    GroupTest::with(services())
        .given(vec![created_by_dora()])
        .when(GroupCommand::DemoteMember { contact_id: dora(), by: GroupActor::PROVIDER })
        .then_expect_events(vec![GroupEvent::MemberDemoted {
            contact_id: dora(),
            from: Role::Superadmin,
            to: Role::Member,
            by: GroupActor::PROVIDER,
            demoted_at: now(),
        }]);
}

// ---- leaving ----

#[test]
fn a_member_leaving_is_recorded_as_member_left() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::LeaveGroup { by: by_author(ann()) })
        .then_expect_events(vec![GroupEvent::MemberLeft { contact_id: ann(), left_at: now() }]);
}

#[test]
fn a_reported_leave_must_name_a_member_who_left() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::LeaveGroup { by: GroupActor::PROVIDER })
        .then_expect_error(FieldError::new("by", "a reported leave must name who left").into());
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::LeaveGroup { by: by_author(cai()) })
        .then_expect_error(GroupError::NotAMember(cai()));
}

#[test]
fn the_inbox_leaving_marks_the_group_left() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::LeaveGroup { by: GroupActor::Inbox })
        .then_expect_events(inbox_left());
}

#[test]
fn the_inbox_being_removed_marks_the_group_left() {
    GroupTest::with(services())
        .given(vec![created_by_dora()])
        .when(GroupCommand::RemoveMember { contact_id: inbox(), by: by_author(dora()) })
        .then_expect_events(vec![
            GroupEvent::MemberRemoved { contact_id: inbox(), by: by_author(dora()), removed_at: now() },
            GroupEvent::GroupLeft { because: LeftBecause::Removed, left_at: now() },
        ]);
}

#[test]
fn a_left_group_refuses_every_management_command() {
    let mut given = vec![created()];
    given.extend(inbox_left());
    let commands = vec![
        GroupCommand::AddMembers { contact_ids: vec![cai()], by: GroupActor::Inbox },
        GroupCommand::RemoveMember { contact_id: ann(), by: GroupActor::Inbox },
        GroupCommand::PromoteMember { contact_id: ann(), by: GroupActor::Inbox },
        GroupCommand::LeaveGroup { by: GroupActor::Inbox },
        GroupCommand::UpdateMetadata {
            patch: GroupMetadataPatch { subject: Some("New".into()), ..GroupMetadataPatch::default() },
            by: GroupActor::Inbox,
        },
        GroupCommand::RevokeInvite { new_code: "CODE2".into(), by: GroupActor::Inbox },
        GroupCommand::JoinViaInvite { contact_id: cai(), code: "CODE1".into() },
        GroupCommand::ChangeSettings {
            patch: GroupSettingsPatch { announce: Some(true), ..GroupSettingsPatch::default() },
            by: GroupActor::Inbox,
        },
        GroupCommand::RequestSync { force: true },
        GroupCommand::RecordActivity { at: now() },
    ];
    for command in commands {
        GroupTest::with(services())
            .given(given.clone())
            .when(command)
            .then_expect_error(GroupError::Left(group_id()));
    }
}

// ---- metadata ----

#[test]
fn a_metadata_patch_records_one_event_per_changed_field() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::UpdateMetadata {
            patch: GroupMetadataPatch {
                subject: Some("Launch team".into()),
                description: Some(None),
                avatar_url: Some(Some("https://cdn.example.com/a.png".into())),
            },
            by: GroupActor::Inbox,
        })
        .then_expect_events(vec![
            GroupEvent::GroupSubjectChanged {
                subject: "Launch team".into(),
                by: GroupActor::Inbox,
                changed_at: now(),
            },
            GroupEvent::GroupDescriptionChanged {
                description: None,
                by: GroupActor::Inbox,
                changed_at: now(),
            },
            GroupEvent::GroupAvatarChanged {
                avatar_url: Some("https://cdn.example.com/a.png".into()),
                by: GroupActor::Inbox,
                changed_at: now(),
            },
        ]);
}

#[test]
fn a_metadata_patch_that_changes_nothing_records_nothing() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::UpdateMetadata {
            patch: GroupMetadataPatch {
                subject: Some(" Launch crew".into()),
                description: Some(Some("Everything about the launch".into())),
                avatar_url: Some(None),
            },
            by: GroupActor::Inbox,
        })
        .then_expect_events(vec![]);
}

#[test]
fn under_restrict_a_non_admin_inbox_cannot_edit_the_info() {
    let restricted = GroupSettings { restrict: true, ..GroupSettings::default() };
    GroupTest::with(services())
        .given(vec![created_by_dora(), settings_changed(restricted)])
        .when(GroupCommand::UpdateMetadata {
            patch: GroupMetadataPatch { subject: Some("Ours now".into()), ..GroupMetadataPatch::default() },
            by: GroupActor::Inbox,
        })
        .then_expect_error(GroupError::AdminsOnly(AdminAction::EditInfo));
}

#[test]
fn without_restrict_a_non_admin_inbox_edits_the_info() {
    GroupTest::with(services())
        .given(vec![created_by_dora()])
        .when(GroupCommand::UpdateMetadata {
            patch: GroupMetadataPatch { subject: Some("Ours now".into()), ..GroupMetadataPatch::default() },
            by: GroupActor::Inbox,
        })
        .then_expect_events(vec![GroupEvent::GroupSubjectChanged {
            subject: "Ours now".into(),
            by: GroupActor::Inbox,
            changed_at: now(),
        }]);
}

#[test]
fn an_avatar_url_must_be_http_or_https_with_a_host() {
    for bad in ["ftp://cdn.example.com/a.png", "cdn.example.com/a.png", "https:///a.png", "https://a b.com/x"]
    {
        let result = GroupTest::with(services())
            .given(vec![created()])
            .when(GroupCommand::UpdateMetadata {
                patch: GroupMetadataPatch {
                    avatar_url: Some(Some(bad.into())),
                    ..GroupMetadataPatch::default()
                },
                by: GroupActor::Inbox,
            })
            .inspect_result();
        assert_eq!(field_of(result), "avatar_url", "{bad:?} was accepted");
    }
}

// ---- invite link ----

#[test]
fn revoking_the_invite_link_rotates_the_code() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::RevokeInvite { new_code: "CODE2".into(), by: GroupActor::Inbox })
        .then_expect_events(vec![GroupEvent::InviteCodeRevoked {
            previous_code: Some("CODE1".into()),
            invite_code: "CODE2".into(),
            by: GroupActor::Inbox,
            revoked_at: now(),
        }]);
}

#[test]
fn revoking_needs_an_admin_and_a_new_code() {
    GroupTest::with(services())
        .given(vec![created_by_dora()])
        .when(GroupCommand::RevokeInvite { new_code: "CODE2".into(), by: GroupActor::Inbox })
        .then_expect_error(GroupError::AdminsOnly(AdminAction::RevokeInvite));
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::RevokeInvite { new_code: "CODE1".into(), by: GroupActor::Inbox })
        .then_expect_error(FieldError::new("new_code", "must differ from the current invite code").into());
}

#[test]
fn joining_with_the_current_code_makes_a_member() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::JoinViaInvite { contact_id: cai(), code: "CODE1".into() })
        .then_expect_events(vec![added(cai(), AddedVia::InviteLink, by_author(cai()))]);
}

#[test]
fn joining_with_a_revoked_code_is_refused() {
    let revoked = GroupEvent::InviteCodeRevoked {
        previous_code: Some("CODE1".into()),
        invite_code: "CODE2".into(),
        by: GroupActor::Inbox,
        revoked_at: now(),
    };
    GroupTest::with(services())
        .given(vec![created(), revoked])
        .when(GroupCommand::JoinViaInvite { contact_id: cai(), code: "CODE1".into() })
        .then_expect_error(GroupError::InvalidInviteCode);
}

#[test]
fn with_join_approval_mode_an_invite_join_becomes_a_pending_request() {
    let approval = GroupSettings { join_approval_mode: true, ..GroupSettings::default() };
    GroupTest::with(services())
        .given(vec![created(), settings_changed(approval)])
        .when(GroupCommand::JoinViaInvite { contact_id: cai(), code: "CODE1".into() })
        .then_expect_events(vec![GroupEvent::JoinRequested {
            contact_id: cai(),
            via: RequestVia::InviteLink,
            requested_at: now(),
        }]);
}

#[test]
fn joining_again_as_a_member_or_with_a_request_pending_records_nothing() {
    let approval = GroupSettings { join_approval_mode: true, ..GroupSettings::default() };
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::JoinViaInvite { contact_id: ann(), code: "CODE1".into() })
        .then_expect_events(vec![]);
    GroupTest::with(services())
        .given(vec![created(), settings_changed(approval), join_requested(cai())])
        .when(GroupCommand::JoinViaInvite { contact_id: cai(), code: "CODE1".into() })
        .then_expect_events(vec![]);
}

// ---- join requests ----

#[test]
fn a_direct_join_request_waits_for_an_admin() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::RequestJoin { contact_id: cai() })
        .then_expect_events(vec![join_requested(cai())]);
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::RequestJoin { contact_id: ann() })
        .then_expect_events(vec![]);
}

#[test]
fn approving_join_requests_in_bulk_makes_each_contact_a_member() {
    GroupTest::with(services())
        .given(vec![created(), join_requested(cai()), join_requested(dora())])
        .when(GroupCommand::ApproveJoinRequests {
            contact_ids: vec![cai(), dora(), cai()],
            by: GroupActor::Inbox,
        })
        .then_expect_events(vec![
            GroupEvent::JoinRequestApproved { contact_id: cai(), by: GroupActor::Inbox, approved_at: now() },
            added(cai(), AddedVia::JoinRequest, GroupActor::Inbox),
            GroupEvent::JoinRequestApproved { contact_id: dora(), by: GroupActor::Inbox, approved_at: now() },
            added(dora(), AddedVia::JoinRequest, GroupActor::Inbox),
        ]);
}

#[test]
fn rejecting_join_requests_in_bulk_records_each_rejection() {
    GroupTest::with(services())
        .given(vec![created(), join_requested(cai()), join_requested(dora())])
        .when(GroupCommand::RejectJoinRequests { contact_ids: vec![dora(), cai()], by: GroupActor::Inbox })
        .then_expect_events(vec![
            GroupEvent::JoinRequestRejected { contact_id: dora(), by: GroupActor::Inbox, rejected_at: now() },
            GroupEvent::JoinRequestRejected { contact_id: cai(), by: GroupActor::Inbox, rejected_at: now() },
        ]);
}

#[test]
fn a_bulk_answer_naming_a_contact_without_a_pending_request_is_refused_as_a_whole() {
    GroupTest::with(services())
        .given(vec![created(), join_requested(cai())])
        .when(GroupCommand::ApproveJoinRequests { contact_ids: vec![cai(), dora()], by: GroupActor::Inbox })
        .then_expect_error(GroupError::NoJoinRequest(dora()));
    let rejected =
        GroupEvent::JoinRequestRejected { contact_id: cai(), by: GroupActor::Inbox, rejected_at: now() };
    GroupTest::with(services())
        .given(vec![created(), join_requested(cai()), rejected])
        .when(GroupCommand::RejectJoinRequests { contact_ids: vec![cai()], by: GroupActor::Inbox })
        .then_expect_error(GroupError::NoJoinRequest(cai()));
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::RejectJoinRequests { contact_ids: vec![], by: GroupActor::Inbox })
        .then_expect_error(FieldError::new("contact_ids", "must not be empty").into());
}

#[test]
fn only_admins_answer_join_requests() {
    GroupTest::with(services())
        .given(vec![created_by_dora(), join_requested(cai())])
        .when(GroupCommand::ApproveJoinRequests { contact_ids: vec![cai()], by: GroupActor::Inbox })
        .then_expect_error(GroupError::AdminsOnly(AdminAction::HandleJoinRequests));
    GroupTest::with(services())
        .given(vec![created_by_dora(), join_requested(cai())])
        .when(GroupCommand::RejectJoinRequests { contact_ids: vec![cai()], by: GroupActor::Inbox })
        .then_expect_error(GroupError::AdminsOnly(AdminAction::HandleJoinRequests));
}

// ---- settings ----

#[test]
fn changing_settings_records_all_of_them_after_the_change() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::ChangeSettings {
            patch: GroupSettingsPatch {
                announce: Some(true),
                member_add_mode: Some(MemberAddMode::AllMembers),
                ..GroupSettingsPatch::default()
            },
            by: GroupActor::Inbox,
        })
        .then_expect_events(vec![settings_changed(GroupSettings {
            announce: true,
            restrict: false,
            join_approval_mode: false,
            member_add_mode: MemberAddMode::AllMembers,
        })]);
}

#[test]
fn settings_that_do_not_change_record_nothing() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::ChangeSettings {
            patch: GroupSettingsPatch { restrict: Some(false), ..GroupSettingsPatch::default() },
            by: GroupActor::Inbox,
        })
        .then_expect_events(vec![]);
}

#[test]
fn only_admins_change_settings() {
    GroupTest::with(services())
        .given(vec![created_by_dora()])
        .when(GroupCommand::ChangeSettings {
            patch: GroupSettingsPatch { announce: Some(true), ..GroupSettingsPatch::default() },
            by: GroupActor::Inbox,
        })
        .then_expect_error(GroupError::AdminsOnly(AdminAction::ChangeSettings));
}

// ---- sync ----

fn sync_requested(at: DateTime<Utc>) -> GroupEvent {
    GroupEvent::GroupSyncRequested { force: false, requested_at: at }
}

/// What the provider reports for `created()` when nothing has changed.
fn unchanged_view() -> ProviderView {
    ProviderView {
        subject: "Launch crew".into(),
        description: Some("Everything about the launch".into()),
        settings: GroupSettings::default(),
        participants: vec![
            member(inbox(), Role::Superadmin),
            member(ann(), Role::Member),
            member(bob(), Role::Admin),
        ],
        invite_code: Some("CODE1".into()),
    }
}

#[test]
fn a_sync_request_is_recorded_when_none_came_before() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::RequestSync { force: false })
        .then_expect_events(vec![sync_requested(now())]);
}

#[test]
fn a_sync_request_within_15_minutes_of_the_last_is_skipped_unless_forced() {
    GroupTest::with(services_at(minutes_later(14)))
        .given(vec![created(), sync_requested(now())])
        .when(GroupCommand::RequestSync { force: false })
        .then_expect_events(vec![]);
    GroupTest::with(services_at(minutes_later(14)))
        .given(vec![created(), sync_requested(now())])
        .when(GroupCommand::RequestSync { force: true })
        .then_expect_events(vec![GroupEvent::GroupSyncRequested {
            force: true,
            requested_at: minutes_later(14),
        }]);
    GroupTest::with(services_at(minutes_later(15)))
        .given(vec![created(), sync_requested(now())])
        .when(GroupCommand::RequestSync { force: false })
        .then_expect_events(vec![sync_requested(minutes_later(15))]);
}

#[test]
fn sync_due_says_when_the_next_sync_is_due() {
    let group = state_after(vec![created(), sync_requested(now())]);
    assert_eq!(
        group.sync_due(minutes_later(5), false),
        Err(SyncSkipped { last_requested_at: now(), next_due_at: minutes_later(15) })
    );
    assert_eq!(group.sync_due(minutes_later(5), true), Ok(()));
    assert_eq!(group.sync_due(minutes_later(15), false), Ok(()));
    assert_eq!(state_after(vec![created()]).sync_due(now(), false), Ok(()));
}

#[test]
fn a_sync_records_only_what_differs() {
    let view = ProviderView {
        subject: "Launch crew".into(),
        description: Some("Now with dates".into()),
        participants: vec![
            member(inbox(), Role::Superadmin),
            member(ann(), Role::Admin),
            member(cai(), Role::Member),
            // Bob is gone.
        ],
        ..unchanged_view()
    };
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::SyncGroup { view })
        .then_expect_events(vec![
            GroupEvent::GroupDescriptionChanged {
                description: Some("Now with dates".into()),
                by: GroupActor::PROVIDER,
                changed_at: now(),
            },
            added(cai(), AddedVia::Added, GroupActor::PROVIDER),
            GroupEvent::MemberPromoted {
                contact_id: ann(),
                from: Role::Member,
                to: Role::Admin,
                by: GroupActor::PROVIDER,
                promoted_at: now(),
            },
            GroupEvent::MemberRemoved { contact_id: bob(), by: GroupActor::PROVIDER, removed_at: now() },
        ]);
}

#[test]
fn a_sync_records_new_settings_and_invite_code_and_keeps_an_unreported_code() {
    let announce = GroupSettings { announce: true, ..GroupSettings::default() };
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::SyncGroup {
            view: ProviderView { settings: announce, invite_code: Some("CODE9".into()), ..unchanged_view() },
        })
        .then_expect_events(vec![
            GroupEvent::GroupSettingsChanged {
                settings: announce,
                by: GroupActor::PROVIDER,
                changed_at: now(),
            },
            GroupEvent::InviteCodeRevoked {
                previous_code: Some("CODE1".into()),
                invite_code: "CODE9".into(),
                by: GroupActor::PROVIDER,
                revoked_at: now(),
            },
        ]);
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::SyncGroup { view: ProviderView { invite_code: None, ..unchanged_view() } })
        .then_expect_events(vec![]);
}

#[test]
fn syncing_the_same_view_twice_records_nothing_the_second_time() {
    let view = ProviderView {
        subject: "Launch crew (2026)".into(),
        participants: vec![
            member(inbox(), Role::Admin),
            member(dora(), Role::Superadmin),
            member(cai(), Role::Admin),
        ],
        ..unchanged_view()
    };
    let first = GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::SyncGroup { view: view.clone() })
        .inspect_result()
        .expect("the first sync is accepted");
    assert!(!first.is_empty(), "the first sync changes the group");
    let mut given = vec![created()];
    given.extend(first);
    GroupTest::with(services_at(minutes_later(30)))
        .given(given)
        .when(GroupCommand::SyncGroup { view })
        .then_expect_events(vec![]);
}

#[test]
fn a_sync_without_the_inbox_removes_it_last_and_marks_the_group_left() {
    let view = ProviderView { participants: vec![member(bob(), Role::Superadmin)], ..unchanged_view() };
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::SyncGroup { view })
        .then_expect_events(vec![
            GroupEvent::MemberPromoted {
                contact_id: bob(),
                from: Role::Admin,
                to: Role::Superadmin,
                by: GroupActor::PROVIDER,
                promoted_at: now(),
            },
            GroupEvent::MemberRemoved { contact_id: ann(), by: GroupActor::PROVIDER, removed_at: now() },
            GroupEvent::MemberRemoved { contact_id: inbox(), by: GroupActor::PROVIDER, removed_at: now() },
            GroupEvent::GroupLeft { because: LeftBecause::Removed, left_at: now() },
        ]);
}

#[test]
fn a_sync_view_with_an_invalid_subject_is_refused() {
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::SyncGroup { view: ProviderView { subject: String::new(), ..unchanged_view() } })
        .then_expect_error(FieldError::new("subject", "must not be empty").into());
}

// ---- activity ----

#[test]
fn an_activity_ping_moves_last_activity_at() {
    GroupTest::with(services_at(minutes_later(10)))
        .given(vec![created()])
        .when(GroupCommand::RecordActivity { at: minutes_later(5) })
        .then_expect_events(vec![GroupEvent::GroupActivityRecorded {
            last_activity_at: minutes_later(5),
            recorded_at: minutes_later(10),
        }]);
}

#[test]
fn an_older_ping_records_nothing_and_a_future_one_is_taken_as_now() {
    let recorded = GroupEvent::GroupActivityRecorded {
        last_activity_at: minutes_later(5),
        recorded_at: minutes_later(5),
    };
    GroupTest::with(services_at(minutes_later(10)))
        .given(vec![created(), recorded])
        .when(GroupCommand::RecordActivity { at: minutes_later(4) })
        .then_expect_events(vec![]);
    GroupTest::with(services())
        .given(vec![created()])
        .when(GroupCommand::RecordActivity { at: minutes_later(60) })
        .then_expect_events(vec![GroupEvent::GroupActivityRecorded {
            last_activity_at: now(),
            recorded_at: now(),
        }]);
}

#[test]
fn an_activity_ping_outside_the_instant_range_is_refused() {
    let year = |y: i32| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).single().expect("a date");
    for at in [year(-100_000), year(1969)] {
        GroupTest::with(services())
            .given(vec![created()])
            .when(GroupCommand::RecordActivity { at })
            .then_expect_error(GroupError::Invalid(FieldError::new("at", validate::INSTANT_RANGE)));
    }
}

// ---- rules for the conversation side ----

#[test]
fn with_announce_on_the_inbox_sends_only_as_an_admin() {
    let announce = GroupSettings { announce: true, ..GroupSettings::default() };
    assert_eq!(state_after(vec![created_by_dora()]).can_inbox_send(), Ok(()));
    assert_eq!(
        state_after(vec![created_by_dora(), settings_changed(announce)]).can_inbox_send(),
        Err(SendRefusal::AnnounceOnly)
    );
    assert_eq!(state_after(vec![created(), settings_changed(announce)]).can_inbox_send(), Ok(()));
}

#[test]
fn a_left_or_missing_group_refuses_the_inbox_sending() {
    let mut events = vec![created()];
    events.extend(inbox_left());
    assert_eq!(state_after(events).can_inbox_send(), Err(SendRefusal::Left));
    assert_eq!(Group::default().can_inbox_send(), Err(SendRefusal::NotFound));
}

#[test]
fn everyone_expands_to_the_current_members_but_the_inbox() {
    let group = state_after(vec![
        created(),
        added(cai(), AddedVia::Added, GroupActor::Inbox),
        GroupEvent::MemberLeft { contact_id: ann(), left_at: now() },
    ]);
    assert_eq!(group.expand_everyone(), vec![bob(), cai()]);
}

#[test]
fn membership_questions_follow_the_history() {
    let group = state_after(vec![
        created_by_dora(),
        GroupEvent::MemberPromoted {
            contact_id: ann(),
            from: Role::Member,
            to: Role::Admin,
            by: by_author(dora()),
            promoted_at: now(),
        },
        GroupEvent::MemberRemoved { contact_id: bob(), by: by_author(dora()), removed_at: now() },
        join_requested(cai()),
    ]);
    assert!(group.is_member(ann()));
    assert!(!group.is_member(bob()));
    assert_eq!(group.role_of(ann()), Some(Role::Admin));
    assert_eq!(group.role_of(bob()), None);
    assert_eq!(group.inbox_role(), Some(Role::Member));
    assert_eq!(group.owner(), Some(dora()));
    assert_eq!(group.member_count(), 3);
    assert_eq!(group.join_requests.keys().copied().collect::<Vec<_>>(), vec![cai()]);
    assert_eq!(group.invite_url().as_deref(), Some("https://chat.whatsapp.com/CODE1"));
    assert_eq!(group.tenant(), Some(&tenant()));
}

#[test]
fn events_are_stored_by_name_with_snake_case_fields_at_version_one() {
    let event = GroupEvent::MemberAdded {
        contact_id: cai(),
        role: Role::Admin,
        via: AddedVia::InviteLink,
        by: by_author(cai()),
        added_at: now(),
    };
    assert_eq!(event.event_type(), "MemberAdded");
    assert_eq!(event.event_version(), crate::EVENT_VERSION_1);
    assert_eq!(event.occurred_at(), now());
    let json = serde_json::to_value(&event).expect("events serialize");
    assert_eq!(json["MemberAdded"]["role"], "admin");
    assert_eq!(json["MemberAdded"]["via"], "invite_link");
    assert_eq!(json["MemberAdded"]["by"]["kind"], "provider");
    assert_eq!(json["MemberAdded"]["by"]["author"], cai().to_string());
    let back: GroupEvent = serde_json::from_value(json).expect("events deserialize");
    assert_eq!(back, event);
    let state = state_after(vec![created(), join_requested(cai())]);
    let json = serde_json::to_value(&state).expect("state serializes");
    assert_eq!(serde_json::from_value::<Group>(json).expect("state deserializes"), state);
}

#[test]
fn a_snapshot_reads_back_as_the_state_it_was_taken_of() {
    use crate::Snapshot;
    let state = state_after(vec![created(), settings_changed(GroupSettings::default())]);
    let mut restored: Group =
        serde_json::from_str(&serde_json::to_string(&state).expect("serialises")).expect("reads back");
    restored.restored();
    assert_eq!(restored, state);
}
