-- Tamper evidence (docs/adr/0010): every event's log row carries a hash over the tenant's previous
-- event's hash and the event's canonical bytes, computed inside the append by the trigger that
-- numbers it, so no event is committed without its link. `colloquy audit verify` recomputes the
-- chain (infra/src/chain.rs) and names the first position where a stored event no longer matches.
--
-- The canonical bytes are netstrings (`<byte length>:<bytes>,`) of the tenant, the global
-- position, the aggregate type and id, the sequence, the event type and version, the payload as
-- stored (`json` keeps the writer's text) and the metadata as `jsonb` prints it. A tenant's first
-- event links to 32 zero bytes.

CREATE FUNCTION chain_field(value text) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$
SELECT convert_to(octet_length(value)::text || ':', 'UTF8') || convert_to(value, 'UTF8') || '\x2c'::bytea
$$;

CREATE FUNCTION chain_link(
    prev bytea,
    tenant_id text,
    log_position bigint,
    aggregate_type text,
    aggregate_id text,
    sequence bigint,
    event_type text,
    event_version text,
    payload text,
    metadata text
) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$
SELECT sha256(prev || chain_field(tenant_id) || chain_field(log_position::text) || chain_field(aggregate_type)
              || chain_field(aggregate_id) || chain_field(sequence::text) || chain_field(event_type)
              || chain_field(event_version) || chain_field(payload) || chain_field(metadata))
$$;

ALTER TABLE event_log ADD COLUMN hash bytea;

-- The events already stored, tenant by tenant in log order (on a large store this takes a while;
-- writers are stopped while a migration runs).
DO
$$
DECLARE
    r      record;
    heads  jsonb := '{}'::jsonb;
    prev   bytea;
BEGIN
    FOR r IN SELECT l.position, l.tenant_id, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type,
                    e.event_version, e.payload::text AS payload, e.metadata::text AS metadata
               FROM event_log l
               JOIN events e ON e.position = l.event_position
              ORDER BY l.position
    LOOP
        prev := coalesce(decode(heads ->> r.tenant_id, 'hex'), '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
        prev := chain_link(prev, r.tenant_id, r.position, r.aggregate_type, r.aggregate_id, r.sequence,
                           r.event_type, r.event_version, r.payload, r.metadata);
        heads := heads || jsonb_build_object(r.tenant_id, encode(prev, 'hex'));
        UPDATE event_log SET hash = prev WHERE position = r.position;
    END LOOP;
END;
$$;

ALTER TABLE event_log ALTER COLUMN hash SET NOT NULL;

-- Numbers a statement's new events (as before) and links each to its tenant's previous one, under
-- the `event_log_state` row lock, so links follow the log's order.
CREATE OR REPLACE FUNCTION events_to_log() RETURNS trigger LANGUAGE plpgsql AS
$$
DECLARE
    added     bigint;
    first     bigint;
    r         record;
    n         bigint := 0;
    tenants   text[] := '{}';
    heads     bytea[] := '{}';
    at        int;
    prev      bytea;
    positions bigint[] := '{}';
    hashes    bytea[] := '{}';
BEGIN
    SELECT count(*) INTO added FROM new_events;
    IF added = 0 THEN
        RETURN NULL;
    END IF;
    -- Takes the row lock, held to the end of the transaction: the serialization point.
    UPDATE event_log_state SET last_position = last_position + added RETURNING last_position - added INTO first;
    FOR r IN SELECT position, aggregate_type, aggregate_id, sequence, tenant_id, event_type, event_version,
                    payload::text AS payload, metadata::text AS metadata
               FROM new_events
              ORDER BY position
    LOOP
        n := n + 1;
        at := array_position(tenants, r.tenant_id);
        IF at IS NULL THEN
            SELECT l.hash INTO prev FROM event_log l WHERE l.tenant_id = r.tenant_id ORDER BY l.position DESC LIMIT 1;
            prev := coalesce(prev, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
            tenants := tenants || r.tenant_id;
            heads := heads || prev;
            at := array_length(tenants, 1);
        ELSE
            prev := heads[at];
        END IF;
        prev := chain_link(prev, r.tenant_id, first + n, r.aggregate_type, r.aggregate_id, r.sequence,
                           r.event_type, r.event_version, r.payload, r.metadata);
        heads[at] := prev;
        positions := positions || r.position;
        hashes := hashes || prev;
    END LOOP;
    INSERT INTO event_log (position, event_position, aggregate_type, aggregate_id, sequence, tenant_id, hash)
    SELECT first + u.n, e.position, e.aggregate_type, e.aggregate_id, e.sequence, e.tenant_id, u.hash
      FROM unnest(positions, hashes) WITH ORDINALITY AS u(event_position, hash, n)
      JOIN new_events e ON e.position = u.event_position;
    RETURN NULL;
END;
$$;
