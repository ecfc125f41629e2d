-- Group conversations: the group a conversation is in, shown and filtered in lists.
ALTER TABLE conversation_list ADD COLUMN group_id text;
-- The group's latest activity the provider reported (for groups whose messages are not processed
-- one by one): newer than a reader's last read, the conversation shows as having unseen activity.
ALTER TABLE conversation_list ADD COLUMN group_activity_at timestamptz;
CREATE INDEX conversation_list_group ON conversation_list (tenant_id, group_id) WHERE group_id IS NOT NULL;

-- Matching a participant given as an E.164 number to the contact that has it.
CREATE INDEX conversation_list_contacts_phone ON conversation_list_contacts (tenant_id, phone) WHERE phone IS NOT NULL;

-- The `group_conversations` process manager: which conversations each group has (its own
-- read model, fed from the same ordered log as the leave events, so a conversation opened just
-- before a leave is never missed) ...
CREATE TABLE group_conversations
(
    tenant_id       text NOT NULL,
    group_id        text NOT NULL,
    conversation_id text NOT NULL,
    PRIMARY KEY (tenant_id, group_id, conversation_id)
);

-- ... and the leaves it still has to act on. A row is written with the projection's checkpoint
-- and marked done once every conversation of the group has been closed; done rows are kept, so
-- a rebuild of the projection does not close conversations a second time.
CREATE TABLE group_leaves
(
    tenant_id      text   NOT NULL,
    group_id       text   NOT NULL,
    leave_event_id text   NOT NULL,
    correlation_id text,
    position       bigint NOT NULL,
    done           boolean NOT NULL DEFAULT false,
    PRIMARY KEY (leave_event_id)
);
CREATE INDEX group_leaves_pending ON group_leaves (position) WHERE NOT done;

-- The group_members read model: every current membership, for questions across groups ("the
-- groups this contact is in"). One group's members, and who they were at a past moment, are
-- answered from the Group aggregate itself.
CREATE TABLE group_members
(
    tenant_id  text NOT NULL,
    group_id   text NOT NULL,
    contact_id text NOT NULL,
    role       text NOT NULL,
    since      timestamptz NOT NULL,
    PRIMARY KEY (group_id, contact_id)
);
CREATE INDEX group_members_contact ON group_members (tenant_id, contact_id, group_id);
