-- The last number given to a conversation or contact per tenant, definition version and kind
-- (projections/src/reports/rollups.rs): a batch naming new ones reads and moves it by its key,
-- not by `max(number)` (on PostgreSQL that index misled the planner's lookups by id; see the
-- PostgreSQL migration of the same name). SQLite keeps its index on the numbers: its planner
-- takes the primary key for a lookup by the whole key, and an index cannot be changed in place
-- on a table the read models' file holds. The store moves this table there when it opens.
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
