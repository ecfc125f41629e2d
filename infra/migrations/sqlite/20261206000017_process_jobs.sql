-- Process managers' jobs, one table for them all (projections/src/processes.rs): what a process's
-- projection half recorded for its actor half to do (a left group's conversations to close, and
-- next a timer to fire or a webhook to deliver), written with the projection's checkpoint.
-- `due_at` (Unix milliseconds; 0 for at once) is when the job may run, moved on by a retry.
-- `subject` names what the job acts on (`conversation/<id>`), for operators' questions.
-- The group_conversations process's pending and done leaves become its jobs: a done one is kept,
-- so a rebuild never acts on a leave again. (On SQLite the table is moved into the read models'
-- file at the next start, as each declared table is.)
CREATE TABLE process_jobs
(
    process        text    NOT NULL,
    job_id         text    NOT NULL,
    tenant_id      text    NOT NULL,
    subject        text,
    position       bigint  NOT NULL,
    due_at         bigint  NOT NULL DEFAULT 0,
    job            text    NOT NULL,
    correlation_id text,
    causation_id   text,
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text,
    done           boolean NOT NULL DEFAULT false,
    PRIMARY KEY (process, job_id)
);
CREATE INDEX process_jobs_due ON process_jobs (process, due_at, position) WHERE NOT done;
CREATE INDEX process_jobs_subject ON process_jobs (tenant_id, subject) WHERE NOT done;

INSERT INTO process_jobs (process, job_id, tenant_id, subject, position, job, correlation_id, causation_id, done)
SELECT 'group_conversations', leave_event_id, tenant_id, 'group/' || group_id, position, json_object('group_id', group_id),
       correlation_id, leave_event_id, done
  FROM group_leaves;
DROP TABLE group_leaves;
