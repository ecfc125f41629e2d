-- A stream is keyed by its tenant (docs/adr/0003): the same id in two tenants is two streams, so
-- an id one tenant chose never blocks, nor tells of, another tenant's. The events' unique key,
-- and the key of every read model keyed by an aggregate's id, gain `tenant_id`. SQLite cannot
-- change a table's key in place: each table is copied into one with the new key, then swapped
-- in, with every row kept (positions and commit times too), so nothing is projected again. (On
-- a store whose read models have their own file, the copies are made in the events' file and
-- moved back at the next start, as a new read-model table is.)

DROP VIEW event_log;

CREATE TABLE events_by_tenant
(
    position       integer PRIMARY KEY,
    aggregate_type text                          NOT NULL,
    aggregate_id   text                          NOT NULL,
    sequence       integer CHECK (sequence >= 1) NOT NULL,
    event_type     text                          NOT NULL,
    event_version  text                          NOT NULL,
    payload        text                          NOT NULL,
    metadata       text                          NOT NULL,
    tenant_id      text GENERATED ALWAYS AS (json_extract(metadata, '$.tenant_id')) VIRTUAL,
    recorded_at    text                          NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- A sequence taken twice in one tenant's stream is an optimistic-lock conflict (a unique
    -- violation, SQLite code 2067).
    UNIQUE (tenant_id, aggregate_type, aggregate_id, sequence),
    CHECK (json_extract(metadata, '$.tenant_id') IS NOT NULL)
) STRICT;

INSERT INTO events_by_tenant (position, aggregate_type, aggregate_id, sequence, event_type, event_version,
                              payload, metadata, recorded_at)
SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at
  FROM events
 ORDER BY position;

-- Dropping a table drops its triggers first, so `events_no_delete` does not refuse this.
DROP TABLE events;
ALTER TABLE events_by_tenant RENAME TO events;

CREATE INDEX events_tenant_position ON events (tenant_id, position);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE VIEW event_log AS
SELECT position, aggregate_type, aggregate_id, sequence, tenant_id, recorded_at
  FROM events;

-- The read models. Indexes a rebuild had deferred are made here, with the new tables.
DELETE FROM deferred_indexes
 WHERE table_name IN ('conversation_list', 'conversation_list_contacts', 'group_members');

CREATE TABLE conversation_list_by_tenant
(
    conversation_id          text    NOT NULL,
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
        coalesce(contact_phone, '') || ' ' || coalesce(last_message_preview, ''))) STORED,
    group_id                 text,
    group_activity_at        text,
    PRIMARY KEY (tenant_id, conversation_id)
) STRICT;

INSERT INTO conversation_list_by_tenant
      (conversation_id, tenant_id, number, contact_id, contact_name, contact_email, contact_phone, channel, inbox_id,
       group_type, subject, status, snoozed_until, priority, priority_rank, assignee_id, team_id, labels, starred,
       deleted, custom_fields, message_count, customer_message_count, last_message_preview, last_message_at,
       last_message_type, last_message_sender_kind, last_responder, last_customer_message_at, last_agent_message_at,
       waiting_since, first_reply_at, response_count, total_response_time_ms, participants, mentioned, readers,
       created_at, updated_at, last_activity_at, version, group_id, group_activity_at)
SELECT conversation_id, tenant_id, number, contact_id, contact_name, contact_email, contact_phone, channel, inbox_id,
       group_type, subject, status, snoozed_until, priority, priority_rank, assignee_id, team_id, labels, starred,
       deleted, custom_fields, message_count, customer_message_count, last_message_preview, last_message_at,
       last_message_type, last_message_sender_kind, last_responder, last_customer_message_at, last_agent_message_at,
       waiting_since, first_reply_at, response_count, total_response_time_ms, participants, mentioned, readers,
       created_at, updated_at, last_activity_at, version, group_id, group_activity_at
  FROM conversation_list;

DROP TABLE conversation_list;
ALTER TABLE conversation_list_by_tenant RENAME TO conversation_list;

CREATE INDEX conversation_list_activity ON conversation_list (tenant_id, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_created ON conversation_list (tenant_id, created_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_priority ON conversation_list (tenant_id, priority_rank, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_waiting ON conversation_list (tenant_id, waiting_since, conversation_id) WHERE NOT deleted AND waiting_since IS NOT NULL;
CREATE INDEX conversation_list_status ON conversation_list (tenant_id, status, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_assignee ON conversation_list (tenant_id, assignee_id, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_team ON conversation_list (tenant_id, team_id, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_inbox ON conversation_list (tenant_id, inbox_id, last_activity_at, conversation_id) WHERE NOT deleted;
CREATE INDEX conversation_list_contact ON conversation_list (tenant_id, contact_id, last_activity_at, conversation_id);
CREATE INDEX conversation_list_group ON conversation_list (tenant_id, group_id) WHERE group_id IS NOT NULL;

CREATE TABLE conversation_list_contacts_by_tenant
(
    contact_id text NOT NULL,
    tenant_id  text NOT NULL,
    name       text,
    email      text,
    phone      text,
    PRIMARY KEY (tenant_id, contact_id)
) STRICT;
INSERT INTO conversation_list_contacts_by_tenant (contact_id, tenant_id, name, email, phone)
SELECT contact_id, tenant_id, name, email, phone FROM conversation_list_contacts;
DROP TABLE conversation_list_contacts;
ALTER TABLE conversation_list_contacts_by_tenant RENAME TO conversation_list_contacts;
CREATE INDEX conversation_list_contacts_phone ON conversation_list_contacts (tenant_id, phone) WHERE phone IS NOT NULL;

CREATE TABLE group_members_by_tenant
(
    tenant_id  text NOT NULL,
    group_id   text NOT NULL,
    contact_id text NOT NULL,
    role       text NOT NULL,
    since      text NOT NULL,
    PRIMARY KEY (tenant_id, group_id, contact_id)
);
INSERT INTO group_members_by_tenant (tenant_id, group_id, contact_id, role, since)
SELECT tenant_id, group_id, contact_id, role, since FROM group_members;
DROP TABLE group_members;
ALTER TABLE group_members_by_tenant RENAME TO group_members;
CREATE INDEX group_members_contact ON group_members (tenant_id, contact_id, group_id);
