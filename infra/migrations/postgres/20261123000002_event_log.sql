-- The global log: every committed event once, numbered 1, 2, 3, ... in an order that never
-- changes once read. Identity values in `events.position` are taken in insert order, but
-- transactions commit in another order, so a reader tailing `events.position > P` could skip an
-- event that commits late. The sequencer (infra/src/log.rs) appends rows here instead, one batch
-- at a time, taking only events whose transactions are all finished: those with
-- xact_id < pg_snapshot_xmin(pg_current_snapshot()), in (xact_id, position) order.
CREATE TABLE event_log
(
    position       bigint PRIMARY KEY,
    event_position bigint NOT NULL UNIQUE,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL,
    tenant_id      text   NOT NULL
);

CREATE INDEX event_log_tenant_position ON event_log (tenant_id, position);
CREATE UNIQUE INDEX event_log_stream ON event_log (aggregate_type, aggregate_id, sequence);

-- How far the sequencer got: every event with xact_id below `horizon` is in the log.
CREATE TABLE event_log_state
(
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    horizon       xid8   NOT NULL,
    last_position bigint NOT NULL
);
INSERT INTO event_log_state (singleton, horizon, last_position) VALUES (true, '0', 0);

-- Checkpoints of the relay and of every projection: the last global position each has handled.
CREATE TABLE checkpoints
(
    name       text PRIMARY KEY,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
