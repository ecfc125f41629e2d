-- The event store. The first seven columns are the ones sqlite-es reads and writes.
CREATE TABLE events
(
    aggregate_type text                           NOT NULL,
    aggregate_id   text                           NOT NULL,
    sequence       integer CHECK (sequence >= 1)  NOT NULL,
    event_type     text                           NOT NULL,
    event_version  text                           NOT NULL,
    payload        text                           NOT NULL,
    metadata       text                           NOT NULL,
    tenant_id      text GENERATED ALWAYS AS (json_extract(metadata, '$.tenant_id')) VIRTUAL,
    -- sqlite-es maps a violation of this key (SQLite code 1555) to an optimistic-lock conflict.
    PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    CHECK (json_extract(metadata, '$.tenant_id') IS NOT NULL)
) STRICT;

-- The global log: one row per event in commit order. SQLite has a single writer, so the order
-- rows are inserted in is the order they commit in; AUTOINCREMENT never reuses a position.
CREATE TABLE event_log
(
    position       integer PRIMARY KEY AUTOINCREMENT,
    aggregate_type text    NOT NULL,
    aggregate_id   text    NOT NULL,
    sequence       integer NOT NULL,
    tenant_id      text    NOT NULL,
    recorded_at    text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (aggregate_type, aggregate_id, sequence)
) STRICT;

CREATE INDEX event_log_tenant_position ON event_log (tenant_id, position);

CREATE TRIGGER events_to_log AFTER INSERT ON events
BEGIN
    INSERT INTO event_log (aggregate_type, aggregate_id, sequence, tenant_id)
    VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence, json_extract(NEW.metadata, '$.tenant_id'));
END;

-- Events are facts: the store refuses to change or remove one.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TABLE tenants
(
    id         text PRIMARY KEY,
    name       text NOT NULL,
    created_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE tenant_counters
(
    tenant_id text    NOT NULL REFERENCES tenants (id),
    name      text    NOT NULL,
    value     integer NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

CREATE TABLE api_tokens
(
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id),
    name        text NOT NULL,
    token_hash  text NOT NULL UNIQUE,
    scopes      text NOT NULL,
    created_at  text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    expires_at  text,
    revoked_at  text
) STRICT;
