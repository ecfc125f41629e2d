-- Each dimension key's rollups gain cells of six hours (grain 3), beside its days: a breakdown
-- folds the facts of at most six hours at either end of its period, not of a day
-- (projections/src/reports/cells.rs, docs/adr/0013). The cells already stored have none, so the
-- reports' projections build again from the log, once.
DELETE FROM report_cells;
DELETE FROM report_numbers;
DELETE FROM report_facts;
DELETE FROM report_conversations;
DELETE FROM report_calendars;
DELETE FROM checkpoints WHERE name LIKE 'projection:reports_v%';
