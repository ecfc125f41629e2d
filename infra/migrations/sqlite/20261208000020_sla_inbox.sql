-- What the inbox shows of each conversation's SLA (projections/src/sla/timers.rs): the worst
-- state of its live timers and their next due, kept by the SLA projection with its timers, and
-- joined to `conversation_list` by the inbox's list for its fields, its `sla_status` filter and
-- its sort by next due. The columns carry an `sla_` prefix so that, joined, no name of either
-- table needs its table's name. A conversation without a live timer has no row. (Moved into the
-- read models' file at the next start, as each declared table is.)
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
       CASE WHEN max(breached) THEN 'breached'
            WHEN max(state = 'running' AND json_array_length(timer, '$.warned') > 0) THEN 'warning'
            WHEN max(state = 'running') THEN 'active'
            ELSE 'paused' END,
       min(CASE WHEN state = 'running' THEN due_at END),
       max(position)
  FROM sla_timers
 WHERE state IN ('running', 'paused')
 GROUP BY tenant_id, conversation_id;
