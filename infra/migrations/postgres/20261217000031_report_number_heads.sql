-- The last number given to a conversation or contact per tenant, definition version and kind
-- (projections/src/reports/rollups.rs): a batch naming new ones reads and moves it by its key.
-- It was `max(number)` through the index on (tenant_id, version, kind, number), and that index
-- shared its first three columns with the primary key: on a young table, before its first
-- ANALYZE, the planner looked a batch's ids up through it and walked every number of the
-- tenant for each id (48 ms a lookup under the SLA benchmark, half of PostgreSQL's time).
-- The numbers stay unique through an index that no lookup by id can use.
CREATE TABLE report_number_heads
(
    tenant_id text    NOT NULL,
    version   integer NOT NULL,
    kind      text    NOT NULL,
    last      bigint  NOT NULL,
    PRIMARY KEY (tenant_id, version, kind)
);
INSERT INTO report_number_heads (tenant_id, version, kind, last)
SELECT tenant_id, version, kind, max(number) FROM report_numbers GROUP BY tenant_id, version, kind;

DROP INDEX report_numbers_number;
CREATE UNIQUE INDEX report_numbers_number ON report_numbers (number, tenant_id, version, kind);
