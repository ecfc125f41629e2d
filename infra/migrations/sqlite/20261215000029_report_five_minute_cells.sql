-- The whole tenant's rollups gain cells of five minutes (grain 2), beside its hours and days: a
-- summary folds the facts of at most five minutes at either end of its period, not of an hour
-- (projections/src/reports/cells.rs, docs/adr/0013). The cells already stored have none, so the
-- reports' projections build again from the log, once.
DELETE FROM report_cells;
DELETE FROM report_numbers;
DELETE FROM report_facts;
DELETE FROM report_conversations;
DELETE FROM report_calendars;
DELETE FROM checkpoints WHERE name LIKE 'projection:reports_v%';
