-- The SLA timers' fire jobs get a lane of their own (projections/src/sla/mod.rs): the process
-- `sla_fire`, beside the `sla` process's observe jobs, so that a breach never waits behind a
-- backlog of observe jobs due before it. Every fire job moves, done ones too: a rebuild of the
-- `sla` projection schedules them again under the new name and must find them done.
UPDATE process_jobs SET process = 'sla_fire' WHERE process = 'sla' AND job_id LIKE 'fire/%';
