-- Webhooks (docs/adr/0012). A subscription itself is a versioned definition (`webhook` streams);
-- these tables hold what is not history:
--
-- `webhook_secrets`: each subscription's signing secret, sealed under the master key
-- (infra/src/secrets.rs), and the one before a rotation with the instant (Unix ms) it stops signing.
CREATE TABLE webhook_secrets
(
    tenant_id              text   NOT NULL,
    webhook_id             text   NOT NULL,
    master_key_id          text   NOT NULL,
    secret                 bytea  NOT NULL,
    previous_master_key_id text,
    previous_secret        bytea,
    previous_until         bigint,
    rotated_at             bigint,
    PRIMARY KEY (tenant_id, webhook_id)
);

-- `webhooks`: the read model of the subscriptions' current versions (projections/src/webhooks.rs),
-- with the log position of the event that created each (where its deliveries start).
CREATE TABLE webhooks
(
    tenant_id        text    NOT NULL,
    id               text    NOT NULL,
    version          bigint  NOT NULL,
    definition       text    NOT NULL,
    created_position bigint  NOT NULL,
    created_at       text    NOT NULL,
    updated_at       text    NOT NULL,
    deleted          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, id)
);

-- `webhook_state`: each subscription's delivery: the last position delivered (or skipped as
-- unwanted), the failure being retried (since when, how many attempts, the next one), the pause
-- and its reason, and which process holds the subscription (`leased_by` until `leased_until`,
-- Unix ms), so that one process at a time delivers it, in order. Kept across a rebuild of
-- `webhooks`; times are Unix milliseconds.
CREATE TABLE webhook_state
(
    tenant_id       text    NOT NULL,
    webhook_id      text    NOT NULL,
    cursor          bigint  NOT NULL,
    failing_since   bigint,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at bigint  NOT NULL DEFAULT 0,
    last_error      text,
    paused_at       bigint,
    paused_reason   text,
    leased_by       text,
    leased_until    bigint  NOT NULL DEFAULT 0,
    delivered       bigint  NOT NULL DEFAULT 0,
    delivered_at    bigint,
    PRIMARY KEY (tenant_id, webhook_id)
);

-- `webhook_deliveries`: every attempt (and test ping), newest kept for 7 days: what was sent,
-- what came back, how long it took.
CREATE TABLE webhook_deliveries
(
    tenant_id        text    NOT NULL,
    webhook_id       text    NOT NULL,
    id               text    NOT NULL,
    attempted_at     bigint  NOT NULL,
    kind             text    NOT NULL,
    message_id       text    NOT NULL,
    first_position   bigint,
    last_position    bigint,
    events           integer NOT NULL,
    attempt          integer NOT NULL,
    outcome          text    NOT NULL,
    status_code      integer,
    error            text,
    latency_ms       bigint  NOT NULL,
    response_excerpt text,
    PRIMARY KEY (tenant_id, webhook_id, id)
);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (attempted_at);
