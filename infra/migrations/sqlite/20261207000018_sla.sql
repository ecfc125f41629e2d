-- The SLA read models (projections/src/sla/): the tenant's versioned definitions (business
-- calendars and SLA policies, their current version each, as the clocks and the listings read
-- them), and every SLA timer of every conversation with its state and its next deadline, and the
-- event that set its times (its start, resume or retarget), which its warnings and breach are
-- caused by.
CREATE TABLE definitions
(
    tenant_id   text    NOT NULL,
    kind        text    NOT NULL,
    id          text    NOT NULL,
    version     integer NOT NULL,
    name        text    NOT NULL,
    definition  text    NOT NULL,
    created_at  text     NOT NULL,
    recorded_at text     NOT NULL,
    deleted     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, kind, id)
);
CREATE INDEX definitions_listing ON definitions (tenant_id, kind, created_at, id);

CREATE TABLE sla_timers
(
    tenant_id       text    NOT NULL,
    conversation_id text    NOT NULL,
    timer_id        text    NOT NULL,
    metric          text    NOT NULL,
    state           text    NOT NULL,
    breached        boolean NOT NULL DEFAULT false,
    next_deadline   text,
    due_at          text,
    timer           text    NOT NULL,
    cause_id        text,
    correlation_id  text,
    position        bigint  NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, timer_id)
);
