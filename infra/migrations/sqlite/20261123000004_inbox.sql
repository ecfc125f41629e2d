-- The inbox read model (projections/src/conversation_list/); see the PostgreSQL migration of the
-- same name. The table is recreated and its checkpoint removed, so the projector rebuilds it.
DROP TABLE conversation_list;
DELETE FROM checkpoints WHERE name = 'projection:conversation_list';

CREATE TABLE conversation_list
(
    conversation_id          text PRIMARY KEY,
    tenant_id                text    NOT NULL,
    number                   integer NOT NULL,
    contact_id               text    NOT NULL,
    contact_name             text,
    contact_email            text,
    contact_phone            text,
    channel                  text    NOT NULL,
    inbox_id                 text,
    group_type               text    NOT NULL,
    subject                  text,
    status                   text    NOT NULL,
    snoozed_until            text,
    priority                 text    NOT NULL,
    priority_rank            integer NOT NULL,
    assignee_id              text,
    team_id                  text,
    labels                   text    NOT NULL,
    starred                  integer NOT NULL,
    deleted                  integer NOT NULL,
    custom_fields            text    NOT NULL,
    message_count            integer NOT NULL,
    customer_message_count   integer NOT NULL,
    last_message_preview     text,
    last_message_at          text,
    last_message_type        text,
    last_message_sender_kind text,
    last_responder           text,
    last_customer_message_at text,
    last_agent_message_at    text,
    waiting_since            text,
    first_reply_at           text,
    response_count           integer NOT NULL,
    total_response_time_ms   integer NOT NULL,
    participants             text    NOT NULL,
    mentioned                text    NOT NULL,
    readers                  text    NOT NULL,
    created_at               text    NOT NULL,
    updated_at               text    NOT NULL,
    last_activity_at         text    NOT NULL,
    version                  integer NOT NULL,
    search                   text GENERATED ALWAYS AS (lower(
        coalesce(subject, '') || ' ' || coalesce(contact_name, '') || ' ' || coalesce(contact_email, '') || ' ' ||
        coalesce(contact_phone, '') || ' ' || coalesce(last_message_preview, ''))) STORED
) STRICT;

CREATE INDEX conversation_list_activity ON conversation_list (tenant_id, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_created ON conversation_list (tenant_id, created_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_priority ON conversation_list (tenant_id, priority_rank, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_waiting ON conversation_list (tenant_id, waiting_since, conversation_id) WHERE NOT deleted AND waiting_since IS NOT NULL;
CREATE INDEX conversation_list_status ON conversation_list (tenant_id, status, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_assignee ON conversation_list (tenant_id, assignee_id, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_team ON conversation_list (tenant_id, team_id, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_inbox ON conversation_list (tenant_id, inbox_id, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_contact ON conversation_list (tenant_id, contact_id, last_activity_at, conversation_id);

CREATE TABLE conversation_list_contacts
(
    contact_id text PRIMARY KEY,
    tenant_id  text NOT NULL,
    name       text,
    email      text,
    phone      text
) STRICT;

CREATE TABLE conversation_counts
(
    tenant_id   text    NOT NULL,
    status      text    NOT NULL,
    assignee_id text    NOT NULL,
    count       integer NOT NULL,
    PRIMARY KEY (tenant_id, status, assignee_id)
) STRICT;
