-- Read model of the conversation_list projection (projections/src/conversation_list.rs).
CREATE TABLE conversation_list
(
    conversation_id      text PRIMARY KEY,
    tenant_id            text    NOT NULL,
    number               integer NOT NULL,
    contact_id           text    NOT NULL,
    channel              text    NOT NULL,
    inbox_id             text,
    subject              text,
    status               text    NOT NULL,
    snoozed_until        text,
    priority             text    NOT NULL,
    assignee_id          text,
    team_id              text,
    labels               text    NOT NULL,
    starred              integer NOT NULL,
    deleted              integer NOT NULL,
    message_count        integer NOT NULL,
    last_message_preview text,
    last_message_at      text,
    created_at           text    NOT NULL,
    last_activity_at     text    NOT NULL,
    version              integer NOT NULL
) STRICT;
CREATE INDEX conversation_list_activity ON conversation_list (tenant_id, last_activity_at DESC, conversation_id DESC);
