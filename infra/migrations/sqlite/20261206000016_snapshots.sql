-- Snapshots of aggregates (infra/src/snapshots.rs): one aggregate's state at a version, so that
-- loading it reads the snapshot and the events after it, not its whole history. Derived data: a
-- lost one costs only a longer load, so the table lives in the read models' file (infra's own, in
-- `STORE_READ_MODEL_TABLES`) and is written without waiting for the disk. The state is the
-- aggregate's serde form; `shape` names that form's version (`Snapshot::SHAPE`).
CREATE TABLE snapshots
(
    tenant_id      text    NOT NULL,
    aggregate_type text    NOT NULL,
    aggregate_id   text    NOT NULL,
    version        integer NOT NULL,
    shape          integer NOT NULL,
    state          text    NOT NULL,
    taken_at       text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (tenant_id, aggregate_type, aggregate_id)
) STRICT;
