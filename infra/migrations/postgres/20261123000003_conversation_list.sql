-- Read model of the conversation_list projection (projections/src/conversation_list.rs): one row
-- per conversation with what a list screen shows.
CREATE TABLE conversation_list
(
    conversation_id      text PRIMARY KEY,
    tenant_id            text        NOT NULL,
    number               bigint      NOT NULL,
    contact_id           text        NOT NULL,
    channel              text        NOT NULL,
    inbox_id             text,
    subject              text,
    status               text        NOT NULL,
    snoozed_until        timestamptz,
    priority             text        NOT NULL,
    assignee_id          text,
    team_id              text,
    labels               text        NOT NULL,
    starred              boolean     NOT NULL,
    deleted              boolean     NOT NULL,
    message_count        bigint      NOT NULL,
    last_message_preview text,
    last_message_at      timestamptz,
    created_at           timestamptz NOT NULL,
    last_activity_at     timestamptz NOT NULL,
    version              bigint      NOT NULL
);
CREATE INDEX conversation_list_activity ON conversation_list (tenant_id, last_activity_at DESC, conversation_id DESC);
