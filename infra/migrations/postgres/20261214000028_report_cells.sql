-- The reports' rollups (projections/src/reports/cells.rs, rollups.rs; docs/adr/0013): what the
-- current facts of one UTC hour or day (grain 0 or 1, from start_at in Unix seconds), one metric
-- and one dimension key amount to, kept in each facts batch's transaction: the summary and the
-- breakdowns of a long period merge a few thousand cells instead of folding a million facts.
-- The dimension is '' for the whole tenant; a key is '' for a fact without one.
CREATE TABLE report_cells
(
    tenant_id text    NOT NULL,
    version   integer NOT NULL,
    dimension text    NOT NULL,
    grain     integer NOT NULL,
    start_at  bigint  NOT NULL,
    metric    text    NOT NULL,
    key       text    NOT NULL,
    cell      bytea   NOT NULL,
    PRIMARY KEY (tenant_id, version, dimension, grain, start_at, metric, key)
);

-- Each conversation and contact a number per tenant and definition version, in the order the
-- facts first name them: the cells' sets of conversations and contacts hold numbers.
CREATE TABLE report_numbers
(
    tenant_id text    NOT NULL,
    version   integer NOT NULL,
    kind      text    NOT NULL,
    id        text    NOT NULL,
    number    bigint  NOT NULL,
    PRIMARY KEY (tenant_id, version, kind, id)
);
CREATE UNIQUE INDEX report_numbers_number ON report_numbers (tenant_id, version, kind, number);

-- A superseded full resolution leaves its cells; its contact stays counted in a cell where
-- another of the contact's conversations has a current one.
CREATE INDEX report_facts_current_resolution ON report_facts (tenant_id, version, contact_id)
    WHERE metric = 'full_resolution' AND superseded_at IS NULL;

-- The facts already stored have no cells: the reports' projections build again from the log.
DELETE FROM report_facts;
DELETE FROM report_conversations;
DELETE FROM report_calendars;
DELETE FROM checkpoints WHERE name LIKE 'projection:reports_v%';
