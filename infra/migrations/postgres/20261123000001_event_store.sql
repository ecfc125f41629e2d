-- The event store. The first seven columns are the ones postgres-es reads and writes; the rest
-- are filled by defaults and generation so that the crate's INSERT, which does not name them,
-- still records them.
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 1) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        jsonb                        NOT NULL,
    metadata       jsonb                        NOT NULL,
    -- Global order of commits. Identity values are taken in insert order, not commit order, so a
    -- tailer must also read xact_id (see the global log) rather than trust position alone.
    position       bigint GENERATED ALWAYS AS IDENTITY,
    xact_id        xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    tenant_id      text GENERATED ALWAYS AS (metadata ->> 'tenant_id') STORED,
    recorded_at    timestamptz                  NOT NULL DEFAULT now(),
    -- postgres-es maps a violation of this key (23505) to an optimistic-lock conflict.
    PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    CONSTRAINT events_tenant_required CHECK (tenant_id IS NOT NULL AND tenant_id <> '')
);

CREATE UNIQUE INDEX events_position ON events (position);
CREATE INDEX events_tenant_position ON events (tenant_id, position);
CREATE INDEX events_xact_position ON events (xact_id, position);

-- Events are facts: the store refuses to change or remove one.
CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END;
$$;
CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();

CREATE TABLE tenants
(
    id         text PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Per-tenant counters, such as the conversation display number. Values are never handed out
-- twice; a refused command leaves a gap, which is allowed.
CREATE TABLE tenant_counters
(
    tenant_id text   NOT NULL REFERENCES tenants (id),
    name      text   NOT NULL,
    value     bigint NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- API tokens are stored only as a SHA-256 hash of the secret.
CREATE TABLE api_tokens
(
    id          uuid PRIMARY KEY,
    tenant_id   text        NOT NULL REFERENCES tenants (id),
    name        text        NOT NULL,
    token_hash  text        NOT NULL UNIQUE,
    scopes      jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);
