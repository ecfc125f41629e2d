-- Global positions are given as events are inserted, instead of by a sequencer after commit.
--
-- Before: an identity value per event (taken in insert order), and a sequencer that numbered the
-- events of finished transactions (xact_id below pg_snapshot_xmin) into event_log. A command had
-- to wait for a sequencer round to learn its position, and any long transaction anywhere in the
-- cluster held the whole log back.
--
-- Now: a statement-level trigger numbers a statement's new events into event_log while it holds
-- the event_log_state row lock, which it keeps until its transaction ends. The next inserter
-- waits for that lock, so it can only take positions after the previous one committed and became
-- visible: positions are handed out in commit order, and a reader of "after P" never misses an
-- event that commits late. Commits that insert events are serialized by the lock; the command
-- runner puts many commands into one insert (group commit), so one WAL flush carries them all.
--
-- A transaction must insert events in one statement (the command runner does): a second insert
-- into `events` in a transaction that already holds the lock could wait on another's uncommitted
-- row while that one waits for the lock.

-- Events that committed before this migration but that the sequencer had not reached yet.
-- (Writers of the previous version must be stopped before migrating: an event it commits later
-- would never be numbered.)
WITH state AS (
    SELECT horizon, last_position FROM event_log_state
), fresh AS (
    SELECT e.position AS event_position, e.aggregate_type, e.aggregate_id, e.sequence, e.tenant_id,
           row_number() OVER (ORDER BY e.xact_id, e.position) AS n
      FROM events e
     WHERE e.xact_id >= (SELECT horizon FROM state)
       AND NOT EXISTS (SELECT 1 FROM event_log l WHERE l.event_position = e.position)
), inserted AS (
    INSERT INTO event_log (position, event_position, aggregate_type, aggregate_id, sequence, tenant_id)
    SELECT (SELECT last_position FROM state) + f.n, f.event_position, f.aggregate_type, f.aggregate_id, f.sequence, f.tenant_id
      FROM fresh f
    RETURNING 1
)
UPDATE event_log_state SET last_position = last_position + (SELECT count(*) FROM inserted);

-- Only the sequencer read events by transaction id.
DROP INDEX events_xact_position;

CREATE FUNCTION events_to_log() RETURNS trigger LANGUAGE plpgsql AS
$$
DECLARE
    added bigint;
    first bigint;
BEGIN
    SELECT count(*) INTO added FROM new_events;
    IF added = 0 THEN
        RETURN NULL;
    END IF;
    -- Takes the row lock, held to the end of the transaction: the serialization point.
    UPDATE event_log_state SET last_position = last_position + added RETURNING last_position - added INTO first;
    INSERT INTO event_log (position, event_position, aggregate_type, aggregate_id, sequence, tenant_id)
    SELECT first + row_number() OVER (ORDER BY position), position, aggregate_type, aggregate_id, sequence, tenant_id
      FROM new_events;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_to_log
    AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION events_to_log();

-- Appends one batch of events in one statement (so in one round trip, autocommit) and returns the
-- global position of its last event. Rows are numbered in the order given. A sequence already
-- taken fails the whole batch with 23505 (unique_violation) and appends nothing.
CREATE FUNCTION append_events(
    aggregate_types text[],
    aggregate_ids text[],
    sequences bigint[],
    event_types text[],
    event_versions text[],
    payloads jsonb[],
    metadatas jsonb[]
) RETURNS bigint LANGUAGE plpgsql AS
$$
DECLARE
    head bigint;
BEGIN
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    SELECT t, a, s, et, ev, p, m
      FROM unnest(aggregate_types, aggregate_ids, sequences, event_types, event_versions, payloads, metadatas)
               WITH ORDINALITY AS u(t, a, s, et, ev, p, m, n)
     ORDER BY n;
    SELECT last_position INTO head FROM event_log_state;
    RETURN head;
END;
$$;
