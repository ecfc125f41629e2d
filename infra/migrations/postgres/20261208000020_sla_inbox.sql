-- What the inbox shows of each conversation's SLA (projections/src/sla/timers.rs): the worst
-- state of its live timers and their next due, kept by the SLA projection with its timers, and
-- joined to `conversation_list` by the inbox's list for its fields, its `sla_status` filter and
-- its sort by next due. The columns carry an `sla_` prefix so that, joined, no name of either
-- table needs its table's name. A conversation without a live timer has no row.
CREATE TABLE sla_inbox
(
    sla_tenant_id       text   NOT NULL,
    sla_conversation_id text   NOT NULL,
    sla_state           text   NOT NULL,
    sla_next_due_at     timestamptz,
    sla_position        bigint NOT NULL,
    PRIMARY KEY (sla_tenant_id, sla_conversation_id)
);
CREATE INDEX sla_inbox_due ON sla_inbox (sla_tenant_id, sla_next_due_at, sla_conversation_id);
CREATE INDEX sla_inbox_state ON sla_inbox (sla_tenant_id, sla_state);

-- The timers already folded (a store that ran the SLA clocks before this migration).
INSERT INTO sla_inbox (sla_tenant_id, sla_conversation_id, sla_state, sla_next_due_at, sla_position)
SELECT tenant_id, conversation_id,
       CASE WHEN bool_or(breached) THEN 'breached'
            WHEN bool_or(state = 'running' AND timer::jsonb -> 'warned' <> '[]'::jsonb) THEN 'warning'
            WHEN bool_or(state = 'running') THEN 'active'
            ELSE 'paused' END,
       min(due_at) FILTER (WHERE state = 'running'),
       max(position)
  FROM sla_timers
 WHERE state IN ('running', 'paused')
 GROUP BY tenant_id, conversation_id;
