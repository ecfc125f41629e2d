-- An event's global position becomes its row's own key: `events.position`, an INTEGER PRIMARY KEY
-- (SQLite's rowid, named, so VACUUM keeps it), and the `event_log` table, which repeated every
-- event's key in a unique index of its own, gives way to a view over `events`.
--
-- Why: a commit wrote six B-trees (the events' rows, their key, the log's rows, the log's unique
-- key, its tenant index, and `sqlite_sequence` for AUTOINCREMENT); now three (the rows, their
-- (aggregate_type, aggregate_id, sequence) key, the tenant index). Every page a commit touches is
-- written whole to the WAL and synced. A page of the log is now a range of `events` read by its
-- key, instead of the log's range joined to `events` one key lookup per event.
--
-- Positions still follow commit order: SQLite has one writer per file, and a row inserted without
-- a position takes the largest one plus one. They are never reused, since events are never
-- deleted (the triggers below refuse it); a rolled-back append leaves no position behind, as
-- before.
--
-- The copy keeps every position and the commit time (`recorded_at`) the log held.

CREATE TABLE events_positioned
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
    -- A sequence taken twice is an optimistic-lock conflict (sqlx reports it as a unique
    -- violation, SQLite code 2067, as it did the primary key's 1555).
    UNIQUE (aggregate_type, aggregate_id, sequence),
    CHECK (json_extract(metadata, '$.tenant_id') IS NOT NULL)
) STRICT;

INSERT INTO events_positioned (position, aggregate_type, aggregate_id, sequence, event_type, event_version,
                               payload, metadata, recorded_at)
SELECT l.position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload,
       e.metadata, l.recorded_at
  FROM event_log l
  JOIN events e ON e.aggregate_type = l.aggregate_type AND e.aggregate_id = l.aggregate_id
               AND e.sequence = l.sequence
 ORDER BY l.position;

-- Dropping a table drops its triggers first, so `events_no_delete` does not refuse this.
DROP TABLE event_log;
DELETE FROM sqlite_sequence WHERE name = 'event_log';
DROP TABLE events;
ALTER TABLE events_positioned RENAME TO events;

CREATE INDEX events_tenant_position ON events (tenant_id, position);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

-- The log as it read before, for anyone reading the file directly.
CREATE VIEW event_log AS
SELECT position, aggregate_type, aggregate_id, sequence, tenant_id, recorded_at
  FROM events;
