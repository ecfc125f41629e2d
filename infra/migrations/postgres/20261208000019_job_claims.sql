-- Process managers' claims (projections/src/processes.rs): a process takes its due jobs by
-- setting `claimed_until` (Unix milliseconds) a lease ahead, so that several processes running one
-- process manager (`serve` and `project` instances on PostgreSQL) each act on other jobs. A job
-- whose claim has run out (its process died mid-round) is taken again by whichever looks next.
ALTER TABLE process_jobs ADD COLUMN claimed_until bigint NOT NULL DEFAULT 0;
