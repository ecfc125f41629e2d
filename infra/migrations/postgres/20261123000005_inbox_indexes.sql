-- An agent's own open conversations (status=open&assignee_id=me, often with a label) is the list
-- agents read most. conversation_list_assignee alone makes it walk every status of the
-- assignee's rows (60% of them not open) in activity order, filtering as it goes; with the
-- status in the key the walk reads only open rows. Measured in BENCHMARKS.md ("Inbox at
-- 1,000,000 conversations").
CREATE INDEX conversation_list_assignee_status ON conversation_list (tenant_id, assignee_id, status, last_activity_at, conversation_id) WHERE NOT deleted;
