-- The reports' read models (projections/src/reports/): one row per fact (a measured span or a
-- counted happening of a conversation, with its dimensions then and the positions of the events
-- that started and ended it), per definition version; each conversation's state as the rules
-- read it; and the business calendars as of the projection's position, which time its facts.
CREATE TABLE report_facts
(
    tenant_id          text    NOT NULL,
    version            integer NOT NULL,
    end_position       bigint  NOT NULL,
    metric             text    NOT NULL,
    kind               text,
    conversation_id    text    NOT NULL,
    contact_id         text    NOT NULL,
    value              bigint,
    business_value     bigint,
    started_at         timestamptz NOT NULL,
    ended_at           timestamptz NOT NULL,
    start_position     bigint  NOT NULL,
    agent_id           text,
    assignee_id        text,
    team_id            text,
    inbox_id           text,
    channel            text    NOT NULL,
    priority           text    NOT NULL,
    labels             text    NOT NULL,
    group_conversation boolean NOT NULL,
    bot                boolean NOT NULL,
    superseded_at      bigint,
    PRIMARY KEY (tenant_id, version, end_position, metric)
);
CREATE INDEX report_facts_time ON report_facts (tenant_id, version, ended_at);
CREATE INDEX report_facts_metric_time ON report_facts (tenant_id, version, metric, ended_at);
CREATE INDEX report_facts_conversation ON report_facts (tenant_id, version, conversation_id, end_position);

CREATE TABLE report_conversations
(
    tenant_id       text    NOT NULL,
    version         integer NOT NULL,
    conversation_id text    NOT NULL,
    state           text    NOT NULL,
    PRIMARY KEY (tenant_id, version, conversation_id)
);

CREATE TABLE report_calendars
(
    tenant_id   text    NOT NULL,
    version     integer NOT NULL,
    calendar_id text    NOT NULL,
    calendar    text    NOT NULL,
    created_position bigint NOT NULL,
    PRIMARY KEY (tenant_id, version, calendar_id)
);
