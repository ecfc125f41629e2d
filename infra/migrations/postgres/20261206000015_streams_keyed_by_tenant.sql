-- A stream is keyed by its tenant (docs/adr/0003): the same id in two tenants is two streams, so
-- an id one tenant chose never blocks, nor tells of, another tenant's. The events' key, the
-- log's, and the key of every read model keyed by an aggregate's id gain `tenant_id`. Each key
-- is built again in place (on a large store this takes a while: every index is rewritten, and
-- the tables are locked meanwhile); no row changes and nothing is projected again.

-- A sequence taken twice in one tenant's stream is an optimistic-lock conflict (23505).
ALTER TABLE events DROP CONSTRAINT events_pkey,
    ADD CONSTRAINT events_pkey PRIMARY KEY (tenant_id, aggregate_type, aggregate_id, sequence);

DROP INDEX event_log_stream;
CREATE UNIQUE INDEX event_log_stream ON event_log (tenant_id, aggregate_type, aggregate_id, sequence);

ALTER TABLE conversation_list DROP CONSTRAINT conversation_list_pkey,
    ADD CONSTRAINT conversation_list_pkey PRIMARY KEY (tenant_id, conversation_id);

ALTER TABLE conversation_list_contacts DROP CONSTRAINT conversation_list_contacts_pkey,
    ADD CONSTRAINT conversation_list_contacts_pkey PRIMARY KEY (tenant_id, contact_id);

ALTER TABLE group_members DROP CONSTRAINT group_members_pkey,
    ADD CONSTRAINT group_members_pkey PRIMARY KEY (tenant_id, group_id, contact_id);
