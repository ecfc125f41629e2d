-- The inbox read model (projections/src/conversation_list/): conversation_list grows to hold
-- everything a list screen shows, with the contact's summary, and gains the per-status and
-- per-assignee counters that answer counts without scanning. The table is recreated and its
-- checkpoint removed, so the projector rebuilds it from the log when it next starts.
DROP TABLE conversation_list;
DELETE FROM checkpoints WHERE name = 'projection:conversation_list';

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE conversation_list
(
    conversation_id          text PRIMARY KEY,
    tenant_id                text        NOT NULL,
    number                   bigint      NOT NULL,
    contact_id               text        NOT NULL,
    contact_name             text,
    contact_email            text,
    contact_phone            text,
    channel                  text        NOT NULL,
    inbox_id                 text,
    group_type               text        NOT NULL,
    subject                  text,
    status                   text        NOT NULL,
    snoozed_until            timestamptz,
    priority                 text        NOT NULL,
    -- low 1, medium 2, high 3, urgent 4: what sort=priority orders by.
    priority_rank            smallint    NOT NULL,
    assignee_id              text,
    team_id                  text,
    labels                   text        NOT NULL, -- JSON array, sorted
    starred                  boolean     NOT NULL,
    deleted                  boolean     NOT NULL,
    custom_fields            text        NOT NULL, -- JSON object
    message_count            bigint      NOT NULL,
    customer_message_count   bigint      NOT NULL,
    last_message_preview     text,
    last_message_at          timestamptz,
    last_message_type        text,
    last_message_sender_kind text,
    last_responder           text,
    last_customer_message_at timestamptz,
    last_agent_message_at    timestamptz,
    waiting_since            timestamptz,
    first_reply_at           timestamptz,
    response_count           bigint      NOT NULL,
    total_response_time_ms   bigint      NOT NULL,
    participants             text        NOT NULL, -- JSON array of user ids, sorted
    mentioned                text        NOT NULL, -- JSON array of user ids, sorted
    readers                  text        NOT NULL, -- JSON object: user id -> receipt
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL,
    last_activity_at         timestamptz NOT NULL,
    version                  bigint      NOT NULL,
    -- What q= searches: subject, contact name, e-mail and phone, last message text.
    search                   text GENERATED ALWAYS AS (lower(
        coalesce(subject, '') || ' ' || coalesce(contact_name, '') || ' ' || coalesce(contact_email, '') || ' ' ||
        coalesce(contact_phone, '') || ' ' || coalesce(last_message_preview, ''))) STORED
);

-- Lists never show deleted conversations, so every list index leaves them out. Each index leads
-- with the tenant and one selective filter and ends with the sort key, so the first page of a
-- filtered list is an index range read in order, never a sort; keyset cursors continue from
-- there. Filters with many matching rows (channel, label, starred, awaiting_response, ranges)
-- ride the plain activity index and stop after one page of matches.
CREATE INDEX conversation_list_activity ON conversation_list (tenant_id, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_created ON conversation_list (tenant_id, created_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_priority ON conversation_list (tenant_id, priority_rank, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_waiting ON conversation_list (tenant_id, waiting_since, conversation_id) WHERE NOT deleted AND waiting_since IS NOT NULL;
CREATE INDEX conversation_list_status ON conversation_list (tenant_id, status, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_assignee ON conversation_list (tenant_id, assignee_id, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_team ON conversation_list (tenant_id, team_id, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_inbox ON conversation_list (tenant_id, inbox_id, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_contact ON conversation_list (tenant_id, contact_id, last_activity_at, conversation_id);
CREATE INDEX conversation_list_search ON conversation_list USING gin (search gin_trgm_ops) WHERE NOT deleted;

-- The contact summary conversation rows carry, kept from Contact events by the same projection.
CREATE TABLE conversation_list_contacts
(
    contact_id text PRIMARY KEY,
    tenant_id  text NOT NULL,
    name       text,
    email      text,
    phone      text
);

-- Live (not deleted) conversations per tenant, status and assignee ('' when unassigned).
CREATE TABLE conversation_counts
(
    tenant_id   text   NOT NULL,
    status      text   NOT NULL,
    assignee_id text   NOT NULL,
    count       bigint NOT NULL,
    PRIMARY KEY (tenant_id, status, assignee_id)
);
